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
# # Remission durability
#
# **Question.** Among patients who reach remission after CAR-T, does adding IFN-α make the remission
# last longer? We fit the pre-specified primary analysis (a mixture cure model for relapse-free
# survival from remission, `models/durability_primary.toml`), compare it with a Weibull
# proportional-hazards model, and check how much the answer depends on the prior.

# %% tags=["parameters"]
cohort_path = "../data_templates/example"
run_dir = None  # the --out folder of `toolkit analyze`: its primary and Weibull runs are loaded, not refitted
draws = None  # None: the spec's [sampler] settings (models/durability_primary.toml)
tune = None
chains = None
seed = None
fast = False

# %%
import os

if os.environ.get("TOOLKIT_NOTEBOOK_FAST") == "1":  # set by the test suite; never a silent downgrade
    print("TOOLKIT_NOTEBOOK_FAST=1 is set in the environment: FAST MODE (few draws), not for decisions")
fast = fast or os.environ.get("TOOLKIT_NOTEBOOK_FAST") == "1"  # CI runs every notebook in fast mode

from toolkit import narrative, plots, review
from toolkit.cli import SPEC_DIR
from toolkit.data import load_cohort
from toolkit.fitting import DurabilityOptions, compare_runs, default_settings, fit_durability
from toolkit.results import load_analysis
from toolkit.specs import load_spec, merged_options, merged_sampler

SPECS = SPEC_DIR
spec = load_spec(SPECS / "durability_primary.toml", model="durability")
chosen = {"draws": draws, "tune": tune, "chains": chains, "seed": seed} | ({"draws": 300, "tune": 300} if fast else {})
settings = default_settings("durability", **merged_sampler(spec, chosen), progressbar=not fast)
cohort = load_cohort(cohort_path)

# %% [markdown]
# ## Primary analysis

# %%
if run_dir:  # made on the command line (`toolkit analyze`): loaded, not refitted
    primary = load_analysis(run_dir, "durability_primary")
    print(f"Loaded the run {primary.path}: not refitted")
else:
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
if run_dir:
    weibull = load_analysis(run_dir, "durability_weibull")
else:
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
for name, fit in {"primary": primary, "weibull": weibull, **sensitivity}.items():
    assert fit.converged or "provisional" in fit.summary["warnings"][0], (
        f"the {name} fit failed its diagnostics but is not labelled provisional: a bug, please report it")
assert {"estimate_default", "estimate_skeptical", "estimate_optimistic"} <= set(sensitivity_table.columns), (
    "the prior-sensitivity table lacks a prior set's estimates: a bug, please report it")
assert set(sensitivity_table["diagnosis"]) <= {"prior-data conflict", "prior-dominated", "fine", ""}
est = primary.summary["estimands"]
assert 0.05 < est["hazard_ratio"]["median"] < 20, (
    f"hazard ratio median {est['hazard_ratio']['median']:.3g} is implausible (outside 0.05-20): an arm may have "
    "almost no responders or no relapses; look at the cohort overview before reading on")
assert 0 < est["rfs_365d_control"]["median"] < 1 and 0 < est["cure_fraction_control"]["median"] < 1, (
    "control-arm RFS at 365 days or cure fraction is at 0 or 1: too few responders or events in the control arm")
assert 0 <= est["prob_hr_below_1"] <= 1, "P(HR < 1) is not a probability: a bug, please report it"

# %% [markdown]
# ## The answer

# %%
print(narrative.durability_in_words(primary.summary))
