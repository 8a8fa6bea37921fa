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

if os.environ.get("TOOLKIT_NOTEBOOK_FAST") == "1":  # set by the test suite; never a silent downgrade
    print("TOOLKIT_NOTEBOOK_FAST=1 is set in the environment: FAST MODE (few draws), not for decisions")
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
# Publication versions: the cohort by arm (seaborn), and relapse-free survival with the numbers at risk.
from toolkit.data.endpoints import time_to_event
from toolkit.plots.publication import plot_cohort_overview, plot_km_at_risk

plot_cohort_overview(cohort);

# %%
rfs = time_to_event(cohort, endpoint="rfs")
plot_km_at_risk(rfs["time"], rfs["event"], rfs["arm"], arm_labels=cohort.arms);

# %%
plots.plot_cart_spaghetti(cohort);

# %%
plots.plot_mrd_spaghetti(cohort);

# %%
# Checks: the cohort validated, both arms are present, and nothing was dropped.
assert set(tables["arms"]["arm"]) == set(cohort.arms), (
    f"the summary shows arms {sorted(tables['arms']['arm'])} but study.toml names {sorted(cohort.arms)}: every "
    "patient must be in one of the two arms named in study.toml")
assert tables["arms"]["patients"].sum() == len(cohort.patients) == len(cohort.outcomes), (
    "the arm table does not count every patient: a bug, please report it")
no_responders = tables["arms"].loc[tables["arms"]["response rate"] == 0, "arm"].tolist()
assert not no_responders, (
    f"arm(s) {', '.join(map(str, no_responders))} have no responders: remission durability and the joint model "
    "need responders in both arms; the response comparison alone can be fitted (durability endpoint efs)")
assert tables["arms"]["response rate"].max() <= 1, "a response rate above 1: a bug, please report it"

# %% [markdown]
# ## In words

# %%
print(narrative.cohort_in_words(cohort, tables))
