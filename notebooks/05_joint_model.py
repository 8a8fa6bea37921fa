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
# # CAR-T kinetics and relapse: the joint model
#
# **Question.** Does IFN-α make remissions last longer *because* the CAR-T cells expand further and persist
# longer? And, for a patient still in remission at day 90, how likely is a relapse within the first year,
# given how their CAR-T cells have behaved so far? We fit the pre-specified joint analysis
# (`models/joint_primary.toml`): each patient's CAR-T curve and their relapse in one model, where the relapse
# hazard of patients not cured depends on the arm, on the peak CAR-T level (Cmax) and on the loss of CAR-T
# cells. The arm's effect is then split into the part that runs through the kinetics (indirect) and the rest
# (direct), and the fitted model predicts each patient's risk of relapse from a day-90 landmark.
#
# To ask the second question of the trial, whether IFN-α also acts through *deeper MRD clearance*, run this
# notebook with `spec_name = "joint_mrd.toml"` and `draws = 2000` (that spec's sampler; its rationale says
# why): it adds the MRD kinetic model to the same posterior and splits the indirect effect into the part
# through CAR-T kinetics and the part through the MRD kill rate.

# %% tags=["parameters"]
cohort_path = "../data_templates/example"
spec_name = "joint_primary.toml"
run_dir = None  # the --out folder of `toolkit analyze` (or a run folder): the spec's run is loaded, not refitted
draws = None  # None: the spec's [sampler] settings (models/<spec_name>)
tune = None
chains = None
seed = None
fast = False
landmark_day = 90
horizon_day = 365

# %%
import os

if os.environ.get("TOOLKIT_NOTEBOOK_FAST") == "1":  # set by the test suite; never a silent downgrade
    print("TOOLKIT_NOTEBOOK_FAST=1 is set in the environment: FAST MODE (few draws), not for decisions")
fast = fast or os.environ.get("TOOLKIT_NOTEBOOK_FAST") == "1"  # CI runs every notebook in fast mode
import json
from pathlib import Path

import pandas as pd

from toolkit import narrative
from toolkit.cli import SPEC_DIR
from toolkit.data import load_cohort
from toolkit.data.describe import describe_cohort
from toolkit.fitting import JointOptions, default_settings, fit_joint
from toolkit.plots import joint as joint_plots
from toolkit.prediction import brier_and_auc, calibration_table, predict_relapse
from toolkit.report_joint import DEFINITIONS
from toolkit.results import load_analysis
from toolkit.specs import load_spec, merged_options, merged_sampler

spec = load_spec(SPEC_DIR / spec_name, model="joint")
chosen = {"draws": draws, "tune": tune, "chains": chains, "seed": seed}
prediction_size = {}
if fast:  # a quick look, not for decisions: few draws, a larger step size, fewer importance samples
    chosen |= {"draws": 100, "tune": 100, "chains": 2, "target_accept": 0.8}
    prediction_size = {"n_draws": 100, "n_proposals": 100}
settings = default_settings("joint", **merged_sampler(spec, chosen), progressbar=not fast)
cohort = load_cohort(cohort_path)  # validates: raises listing every problem in the files
describe_cohort(cohort)["arms"]

# %% [markdown]
# ## What the answer is made of
#
# The quantities below are defined on patients who are not cured (the cure fraction has its own arm effect,
# with no kinetic link), over the first year after remission.

# %%
pd.Series(DEFINITIONS, name="meaning").rename_axis("quantity").to_frame()

# %% [markdown]
# ## Fit
#
# The priors of the association parameters come from published trials (JULIET for Cmax, Pulsipher 2022 for
# B-cell recovery), widened for the transfer to this trial; sources in `toolkit/models/joint.py`.

# %%
options = JointOptions(**merged_options(spec, {}))
if run_dir:  # made on the command line (`toolkit analyze`): loaded, not refitted
    fit = load_analysis(run_dir, Path(spec_name).stem)
else:
    fit = fit_joint(cohort, options, settings, spec=spec)
posterior = fit.posterior["posterior"]
fit.summary["diagnostics"]

# %%
narrative.estimands_table(fit.summary)

# %% [markdown]
# ## Does IFN-α act through the kinetics?
#
# The total effect on the relapse hazard, and its split into the part through CAR-T kinetics (indirect) and
# the rest (direct); total = direct × indirect.

# %%
joint_plots.plot_mediation_forest(fit.summary["estimands"]);

# %% [markdown]
# The same split as relapse-free curves of patients not cured: the experimental arm with its own kinetics
# (solid orange), with the control arm's kinetics (dashed) and the control arm (blue). The gap between the
# two orange curves is what IFN-α does through the CAR-T cells.

# %%
joint_plots.plot_mediation_curves(posterior, arm_labels=cohort.arms, tau_days=options.tau_days,
                                  n_draws=100 if fast else 300, **joint_plots.curve_defaults(fit));

# %% [markdown]
# How strongly the kinetics are linked to relapse, and how much the data taught us beyond the priors.

# %%
joint_plots.plot_association_posteriors(posterior, fit.provenance["priors"]);

# %% [markdown]
# ## Dynamic prediction from day 90
#
# For every responder still in remission, alive and untransplanted at the landmark day, the probability of
# relapse by the horizon given their CAR-T samples up to the landmark. Here it is computed on the cohort the
# model was fitted to, so the calibration below is optimistic; for new patients use
# `toolkit predict RUN --patient-data DIR`.

# %%
predictions = predict_relapse(fit, cohort, landmark_day=landmark_day, horizons=(horizon_day,), random_seed=settings.random_seed,
                              **prediction_size)
risk = f"p_relapse_by_{horizon_day:g}d"
arm_names = dict(enumerate(cohort.arms))
highest = predictions.sort_values(risk, ascending=False).head(10).assign(arm=lambda d: d["arm"].map(arm_names))
highest[["patient_id", "arm", "n_samples", risk, f"{risk}_lo", f"{risk}_hi", "ess"]].round(2)

# %% [markdown]
# Calibration: patients grouped by predicted risk, against the share who relapsed by the horizon (patients
# censored before the horizon without relapse are left out).

# %%
observed = joint_plots.known_outcomes(cohort, predictions["patient_id"], horizon_day)
known = observed.notna().to_numpy()
predicted, relapsed = predictions[risk].to_numpy()[known], observed.to_numpy()[known]
scores = brier_and_auc(predicted, relapsed)
table = None
if known.sum() >= 6:
    table = calibration_table(predicted, relapsed, bins=max(2, min(5, int(known.sum()) // 5)))
    joint_plots.plot_calibration(table, scores=scores,
                                 title=f"Relapse by day {horizon_day:g}, predicted at day {landmark_day:g}")
scores

# %%
# Checks: the fit converged or is labelled provisional; the total hazard ratio is plausible; predicted risks
# are probabilities; the calibration table counts exactly the patients with a known outcome.
assert fit.converged or "provisional" in fit.summary["warnings"][0], (
    "the fit failed its diagnostics but is not labelled provisional: a bug, please report it")
est = fit.summary["estimands"]
assert 0.1 < est["hazard_ratio_total"]["median"] < 10, (
    f"total hazard ratio median {est['hazard_ratio_total']['median']:.3g} is implausible (outside 0.1-10): an arm "
    "may have almost no responders or relapses; look at the cohort overview before reading on")
assert 0 <= est["prob_hazard_ratio_total_below_1"] <= 1, "a posterior probability is outside 0-1: a bug"
p_columns = [c for c in predictions.columns if c.startswith("p_relapse_by_")]
assert len(predictions) > 0, (
    f"no patient is in remission and followed at day {landmark_day:g}: choose an earlier landmark_day")
assert ((predictions[p_columns] >= 0) & (predictions[p_columns] <= 1)).all().all(), "a risk outside 0-1: a bug"
if table is not None:
    assert table["n"].sum() == known.sum(), "the calibration table miscounts the known outcomes: a bug"
    assert abs((table["n"] * table["observed"]).sum() - relapsed.sum()) < 1e-9, "the calibration table miscounts relapses"
truth_file = Path(cohort_path) / "truth.json"
if truth_file.exists() and not fast:
    truth = json.loads(truth_file.read_text())["estimands"]
    for name in ("log_hr_per_log_cmax", "log_hr_cart_loss"):
        if name in truth and name in est:
            lo, hi = est[name]["hdi_90"]
            assert lo - 0.5 < truth[name] < hi + 0.5, (name, truth[name], lo, hi)

# %% [markdown]
# ## The answer

# %%
print(narrative.joint_in_words(fit.summary, predictions, landmark_day=landmark_day))
