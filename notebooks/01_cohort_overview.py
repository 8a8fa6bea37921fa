# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Cohort overview
#
# **Question.** Who is in this cohort, how did they respond, and how long did remissions last, by arm?
# Before any model is fitted we check that the data are complete and consistent, then look at
# response, relapse, follow-up, and the CAR-T and MRD measurements.

# %% tags=["parameters"]
cohort_path = "../data_templates/example"
draws = 1000
tune = 1000
chains = 4
seed = 20261125
fast = False

# %%
import os

fast = fast or os.environ.get("TOOLKIT_NOTEBOOK_FAST") == "1"  # CI runs every notebook in fast mode
from toolkit import narrative, plots
from toolkit.data import load_cohort
from toolkit.data.describe import describe_cohort

cohort = load_cohort(cohort_path)  # raises with every problem (file, row, column, fix) if the data are not valid
tables = describe_cohort(cohort)
tables["arms"]

# %%
tables["rfs"]

# %%
tables["samples"]

# %%
plots.plot_km_by_arm(cohort, endpoint="rfs");

# %%
plots.plot_km_by_arm(cohort, endpoint="efs");

# %%
plots.plot_cart_spaghetti(cohort);

# %%
plots.plot_mrd_spaghetti(cohort);

# %%
# Checks: the cohort validated, both arms are present, and nothing was dropped.
assert set(tables["arms"]["arm"]) == set(cohort.arms)
assert tables["arms"]["patients"].sum() == len(cohort.patients) == len(cohort.outcomes)
assert 0 < tables["arms"]["response rate"].min() <= tables["arms"]["response rate"].max() <= 1

# %% [markdown]
# ## In words

# %%
print(narrative.cohort_in_words(cohort, tables))
