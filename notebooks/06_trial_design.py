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
# # Trial design and interim decisions
#
# **Question.** With the pre-specified decision rule and at most 60 patients, how often would the trial
# declare IFN-α effective when it is not (type I error), and when it is (power)? And for the trial in
# progress: how likely is it to succeed at its final analysis (predictive probability of success)?
# Operating characteristics come from whole simulated trials whose looks happen in calendar time
# (`toolkit design`); the predictive probability imputes the follow-up not yet seen from the posterior
# (`toolkit interim`). The design is data: `models/design_primary.toml`.

# %% tags=["parameters"]
cohort_path = "../data_templates/example"
draws = 1000
tune = 500
chains = 2
seed = 20261125
fast = False
trials = 400  # simulated trials a scenario for the analytic check

# %%
import os
import tempfile

fast = fast or os.environ.get("TOOLKIT_NOTEBOOK_FAST") == "1"  # CI runs every notebook in fast mode

from toolkit.cli import SPEC_DIR
from toolkit.data import load_cohort
from toolkit.design.interim import predictive_probability_of_success
from toolkit.design.operating import load_results, operating_characteristics, run_design
from toolkit.design.report import oc_table, plot_operating_characteristics, sentences
from toolkit.design.spec import load_design

if fast:
    draws, tune, trials = 300, 300, 20
design = load_design(SPEC_DIR / "design_primary.toml")
print(design.rule_text(), "| max N", design.max_patients, "| looks:", [lk.name for lk in design.looks])
print("interim boundaries:", design.boundary_text())

# %% [markdown]
# ## The machinery against a known answer
#
# `models/design_check_exponential.toml`: exponential relapse without cure and a conjugate exponential
# rule, P(HR < 1) > 0.975. Its type I error is 2.5% and its power follows from Schoenfeld's normal
# approximation (log-HR variance 4/D with D events). The simulated figures should agree within their
# Monte Carlo error (larger numbers of trials: `docs/design.md`).

# %%
check = load_design(SPEC_DIR / "design_check_exponential.toml")
study = run_design(check, trials, tempfile.mkdtemp(prefix="design-check-"), workers=0)
check_oc = operating_characteristics(check, load_results(study), {"no_effect": 1.0, "hr_0.5": 0.5})
oc_table(check, check_oc)

# %%
import numpy as np
from scipy import stats

final = load_results(study)
alt = final[final["scenario"] == "hr_0.5"]
schoenfeld = float(np.mean(stats.norm.cdf(np.log(2) * np.sqrt(alt["events"] / 4) - stats.norm.ppf(0.975))))
row = check_oc.set_index("scenario").loc["hr_0.5"]
print(f"power simulated {row.p_success:.3f} ± {row.p_success_se:.3f}; Schoenfeld {schoenfeld:.3f}")
assert abs(row.p_success - schoenfeld) < 4 * row.p_success_se + 1e-9

# %%
plot_operating_characteristics(check, check_oc);

# %% [markdown]
# ## Operating characteristics of the primary design
#
# Each simulated trial fits the primary cure model at the interim and at the final analysis (one model
# compiled per worker, seconds per trial), stops at the interim on the predictive probability of success
# (`design.boundary_text()` below), and runs from the command line (resumable, on Dask):
#
# ```
# toolkit design models/design_primary.toml --trials 200 --out design_study --workers 2
# ```
#
# and writes `operating_characteristics.csv`/`.md`, `figure.png` and `design.html`. The table measured
# for this repository is in `docs/design.md`.

# %% [markdown]
# ## Predictive probability of success for the cohort

# %%
cohort = load_cohort(cohort_path)
pos = predictive_probability_of_success(cohort, design, imputations=100 if fast else 1000, seed=seed,
                                        overrides={"draws": draws, "tune": tune, "chains": chains})
assert 0.0 <= pos["pos"] <= 1.0 and pos["pos_mc_se"] <= 0.06
print("\n".join(pos["sentences"]))
