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
# # MRD kinetics
#
# **Question.** Among patients who respond to CAR-T, does adding IFN-α clear measurable residual disease
# (MRD) faster or deeper, and does it make MRD recurrence less likely? We fit the pre-specified primary
# analysis (`models/mrd_primary.toml`: a per-patient log-linear kill to a floor, then either sustained
# remission or regrowth; flow and NGS together, every negative kept as a censored value at its own
# detection limit), check it against the data patient by patient and with a posterior predictive check,
# and read the arm effects.

# %% tags=["parameters"]
cohort_path = "../data_templates/example"
run_dir = None  # the --out folder of `toolkit analyze` (or a run folder): its mrd_primary run is loaded, not refitted
draws = None  # None: the spec's [sampler] settings (models/mrd_primary.toml)
tune = None
chains = None
seed = None
fast = False
patients_shown = None  # None: every analysed patient in the trajectories grid; e.g. 12 for the first 12

# %%
import os

if os.environ.get("TOOLKIT_NOTEBOOK_FAST") == "1":  # set by the test suite; never a silent downgrade
    print("TOOLKIT_NOTEBOOK_FAST=1 is set in the environment: FAST MODE (few draws), not for decisions")
fast = fast or os.environ.get("TOOLKIT_NOTEBOOK_FAST") == "1"  # CI runs every notebook in fast mode
import json
from pathlib import Path

from toolkit import narrative, plots
from toolkit.cli import SPEC_DIR
from toolkit.data import load_cohort
from toolkit.fitting import MrdOptions, default_settings, fit_mrd
from toolkit.mrd_estimands import patient_recurrence, replicated_negative
from toolkit.plots import mrd as mrd_plots
from toolkit.report_mrd import mrd_answer
from toolkit.results import load_analysis
from toolkit.specs import load_spec, merged_options, merged_sampler

spec = load_spec(SPEC_DIR / "mrd_primary.toml", model="mrd")
chosen = {"draws": draws, "tune": tune, "chains": chains, "seed": seed}
if fast:
    chosen |= {"draws": 200, "tune": 200, "chains": 2}
    patients_shown = patients_shown or 12
settings = default_settings("mrd", **merged_sampler(spec, chosen), progressbar=not fast)
cohort = load_cohort(cohort_path)  # validates: raises listing every problem in the files
plots.plot_mrd_spaghetti(cohort);

# %% [markdown]
# ## Fit

# %%
if run_dir:  # made on the command line (`toolkit analyze`): loaded, not refitted
    fit = load_analysis(run_dir, "mrd_primary")
else:
    fit = fit_mrd(cohort, MrdOptions(**merged_options(spec, {})), settings, spec=spec)
posterior = fit.posterior["posterior"]
fit.summary["diagnostics"]

# %%
narrative.estimands_table(fit.summary)

# %% [markdown]
# ## Does the model describe the data?
#
# Each responder's assessments under the model's true-MRD trajectory (median and 90% band, on the NGS
# scale). Filled markers are quantified values; open markers are negatives drawn at the assay's detection
# limit (the true value is somewhere below); a bar spans the detection-to-quantification limits of a
# positive-but-not-quantifiable result.

# %%
shown = None if patients_shown is None else fit.inputs.patient_ids[:patients_shown]
mrd_plots.plot_mrd_trajectories(posterior, fit.inputs, patients=shown);

# %% [markdown]
# Posterior predictive check: every assessment measured again from the fitted model at its own day and
# detection limit. The observed share MRD-negative per visit window (points) should lie in the bands.

# %%
table = mrd_plots.fraction_negative_table(fit.inputs, replicated_negative(posterior, fit.inputs))
mrd_plots.plot_fraction_negative(table, arm_labels=fit.inputs.arm_labels);

# %% [markdown]
# ## The arm effects, and each patient's risk of MRD recurrence

# %%
mrd_plots.plot_mrd_effects(fit.summary["estimands"]);

# %%
patient_recurrence(posterior, fit.inputs).round(2).head(10)

# %%
# Checks: the fit converged or is labelled provisional; the check's observed counts are the data's;
# estimates lie in a plausible range (and, on a simulated cohort, the clearance ratio covers its true value).
assert fit.converged or "provisional" in fit.summary["warnings"][0], (
    "the fit failed its diagnostics but is not labelled provisional: a bug, please report it")
assert table["n"].sum() == fit.inputs.n_assessments, "the check does not count every MRD assessment: a bug"
assert table["negative"].sum() == (fit.inputs.censoring == 1).sum(), "the check miscounts negative assessments: a bug"
est = fit.summary["estimands"]
assert 1 / 4 < est["clearance_rate_ratio"]["median"] < 4, (
    f"clearance rate ratio median {est['clearance_rate_ratio']['median']:.3g} is implausible (outside 1/4-4): an "
    "arm may have too few quantifiable MRD assessments; look at the MRD spaghetti plot before reading on")
for arm in ("control", "experimental"):
    assert 0 <= est[f"mrd_negative_28d_ngs_{arm}"]["median"] <= est[f"mrd_negative_28d_flow_{arm}"]["median"] <= 1, (
        f"{arm}: MRD negativity by NGS exceeds negativity by flow (NGS is the more sensitive method): a bug")
assert 0 <= est["prob_mrd_recurrence_365d_lower"] <= 1, "a posterior probability is outside 0-1: a bug"
truth_file = Path(cohort_path) / "truth.json"
if truth_file.exists() and not fast:
    truth = json.loads(truth_file.read_text())["estimands"]["clearance_rate_ratio"]
    lo, hi = est["clearance_rate_ratio"]["hdi_90"]
    assert lo < truth < hi, (truth, lo, hi)

# %% [markdown]
# ## The answer

# %%
status = "" if fit.converged else "PROVISIONAL (the fit failed its diagnostics): "
print(status + " ".join(narrative.plain(s) for s in mrd_answer(fit.summary)))
