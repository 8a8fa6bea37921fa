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
#     display_name: CAR-T toolkit (Python 3.12)
#     language: python
#     name: cart-toolkit
# ---

# %% [markdown]
# # Remission durability
#
# **Question.** Among patients who reach remission after CAR-T, does adding IFN-α make the remission
# last longer? We fit the pre-specified primary analysis (a mixture cure model for relapse-free
# survival from remission, `models/durability_primary.toml`), compare it with a Weibull
# proportional-hazards model, and check how much the answer depends on the prior.

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

from toolkit import narrative, plots, review
from toolkit.cli import SPEC_DIR
from toolkit.data import load_cohort
from toolkit.fitting import DurabilityOptions, compare_runs, default_settings, fit_durability
from toolkit.specs import load_spec, merged_options

SPECS = SPEC_DIR
if fast:
    draws, tune = 300, 300
settings = default_settings("durability", draws=draws, tune=tune, chains=chains, random_seed=seed, progressbar=not fast)
cohort = load_cohort(cohort_path)

# %% [markdown]
# ## Primary analysis

# %%
spec = load_spec(SPECS / "durability_primary.toml", model="durability")
primary = fit_durability(cohort, DurabilityOptions(**merged_options(spec, {})), settings, spec=spec)
primary.summary["diagnostics"]

# %%
narrative.estimands_table(primary.summary)

# %%
plots.plot_rfs_overlay(primary.posterior["posterior"], primary.inputs, variant="cure");

# %%
plots.plot_forest(primary.summary["estimands"]);

# %% [markdown]
# ## Weibull proportional hazards, and which model the data favour

# %%
spec_w = load_spec(SPECS / "durability_weibull.toml", model="durability")
weibull = fit_durability(cohort, DurabilityOptions(**merged_options(spec_w, {})), settings, spec=spec_w)
compare_runs({"cure": primary, "weibull": weibull})

# %%
plots.plot_rfs_overlay(weibull.posterior["posterior"], weibull.inputs, variant="weibull");

# %% [markdown]
# ## Prior sensitivity
#
# Power-scaling (Kallioinen et al. 2024): how much each hyperparameter and estimand moves when the prior
# or the likelihood is raised to a power near 1 ("prior-data conflict", "prior-dominated" or "fine"),
# beside the estimates under the skeptical and optimistic arm-effect priors (docs/priors.md#durability-skeptical).

# %%
sensitivity = {}
for prior in ("skeptical", "optimistic"):
    options = DurabilityOptions(**merged_options(spec, {"prior": prior}))
    sensitivity[prior] = fit_durability(cohort, options, settings, spec=spec)
sensitivity_table = review.sensitivity_table(primary, alternatives=sensitivity)
sensitivity_table

# %% [markdown]
# ## Diagnostics: every parameter, and trace and rank plots of the population-level ones

# %%
review.summary_table(primary.posterior)

# %%
review.trace_rank_figures(primary.posterior);

# %%
# Checks: every fit converged or is labelled provisional; estimates lie in a plausible range.
for fit in [primary, weibull, *sensitivity.values()]:
    assert fit.converged or "provisional" in fit.summary["warnings"][0]
assert {"estimate_default", "estimate_skeptical", "estimate_optimistic"} <= set(sensitivity_table.columns)
assert set(sensitivity_table["diagnosis"]) <= {"prior-data conflict", "prior-dominated", "fine", ""}
est = primary.summary["estimands"]
assert 0.05 < est["hazard_ratio"]["median"] < 20
assert 0 < est["rfs_365d_control"]["median"] < 1 and 0 < est["cure_fraction_control"]["median"] < 1
assert 0 <= est["prob_hr_below_1"] <= 1

# %% [markdown]
# ## The answer

# %%
print(narrative.durability_in_words(primary.summary))
