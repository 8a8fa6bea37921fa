"""Parameter recovery of the CAR-T kinetic model on simulated trials with known truth.

Each cohort is ``toolkit.simulate.simulate_trial(60, seed=s)`` with the default
IFN-alpha effects (Cmax GMR 1.5, persistence half-life ratio 1.5); the truth is
``compute_truth`` of the same story (population quantities, as in truth.json).
The fast test fits 3 cohorts; the 40-cohort coverage study is marked slow
(`make test-slow`, about 40 minutes on 2 cores). ``$CART_RECOVERY_SEEDS``
("first-last", default 400-439) runs a sub-range, and each cohort's numbers are
appended to ``$CART_RECOVERY_LOG`` (JSON lines) when set, so a long run can be
split or stopped without losing what it measured.

Why 40 cohorts: with 20 (seeds 400-419) coverage was 0.80 for ``cmax_gmr`` and
0.75 for ``auc28_gmr``, every miss on the low side. That was the data, not the
model: the mean arm difference of the patients' highest observed log level in
those 20 cohorts is 0.30 (it is 0.33 over seeds 400-459, against a true 0.41),
and the posterior follows it (seed 412: highest-level difference 0.12, latent
log-Cmax difference 0.32, posterior 0.05). On top of that the Normal(0, 0.4)
prior (docs/priors.md#cart-effect-cmax) puts the true 1.5-fold effect at 1 prior SD and shrinks
it by about 20 %. Twenty cohorts give a coverage estimate with a binomial SE of
0.07-0.09; forty halve the variance.
"""

import dataclasses
import json
import os

import numpy as np
import pytest

from toolkit.data import load_cohort
from toolkit.data.inputs import to_cart_inputs
from toolkit.estimands import cart_estimands
from toolkit.inference import SamplerSettings, diagnose, sample
from toolkit.models.cart import RECOMMENDED_TARGET_ACCEPT, CartPriors, build_cart_model
from toolkit.simulate import Effects, compute_truth, simulate_trial
from toolkit.testing import coverage_problems

EFFECTS = Effects()
CHECKED = ("cmax_gmr", "auc28_gmr", "persistence_half_life_ratio")
# the arm effect each ratio is exp() of (the typical patient's, so the posterior/prior SD ratio of the
# parameter says how much the data narrowed the estimand's interval); auc28_gmr mixes several
EFFECT_OF = {"cmax_gmr": "cmax", "persistence_half_life_ratio": "persistence"}
POPULATION = ["mu_kinetic", "omega_kinetic", "arm_effect", "sigma_log"]
SETTINGS = SamplerSettings(chains=4, tune=500, draws=500, progressbar=False)
SLOW_SETTINGS = SamplerSettings(chains=4, tune=1000, draws=1000, progressbar=False,
                                target_accept=RECOMMENDED_TARGET_ACCEPT)


@pytest.fixture(scope="module")
def truth():
    return compute_truth(EFFECTS)


def _fit(tmp_path, seed, priors=None, settings=SETTINGS):
    folder = simulate_trial(60, seed=seed, effects=EFFECTS, with_truth=False).write(tmp_path / f"c{seed}")
    cohort = load_cohort(folder)
    # a simulated patient who dies or relapses before day 1 has no sample; to_cart_inputs refuses such a
    # cohort, so the analysis set here is the patients with at least one sample
    sampled = cohort.patients["patient_id"].isin(cohort.cart["patient_id"])
    inputs = to_cart_inputs(dataclasses.replace(cohort, patients=cohort.patients[sampled]))
    dt = sample(build_cart_model(inputs, priors), settings, log_likelihood=False)
    return inputs, dt


def _coverage(tmp_path, seeds, truth, names=CHECKED, priors=None, settings=SETTINGS):
    """Share of cohorts whose 90 % HDI covers the truth, per estimand; the max R-hat of each fit; and per
    estimand the cohorts' covered flags and (``EFFECT_OF``) posterior/prior SD ratios of the arm effect.

    Convergence is reported, not asserted per fit: a patient whose profile is flat after the peak can be
    fitted by a slow contraction with a small FB or by a fast one with a large FB, a genuinely bimodal
    posterior that a chain may not leave (it shows as R-hat > 1.01 on omega[fb] or omega[alpha]).
    """
    hits = {name: [] for name in names}
    hits["max_rhat"] = []
    sd_ratios = {name: [] for name in names if name in EFFECT_OF}
    prior_sd = dict(zip(EFFECT_OF.values(), (priors or CartPriors()).effect(tuple(EFFECT_OF.values()))[:, 1]))
    rows = []
    for seed in seeds:
        inputs, dt = _fit(tmp_path, seed, priors, settings)
        d = diagnose(dt, var_names=POPULATION, ess_min=100)
        hits["max_rhat"].append(d.max_rhat)
        est = cart_estimands(dt["posterior"], inputs)
        row = [seed, d.divergences, round(d.max_rhat, 3), round(d.min_ess_bulk)]
        for name in sd_ratios:
            effect = dt["posterior"]["arm_effect"].sel(effect=EFFECT_OF[name])
            sd_ratios[name].append(float(effect.std()) / prior_sd[EFFECT_OF[name]])
        for name in names:
            lo, hi = est[name]["hdi_90"]
            hits[name].append(lo < truth[name] < hi)
            row.append(f"{est[name]['median']:.2f} [{lo:.2f}, {hi:.2f}]{'' if hits[name][-1] else ' MISS'}")
        rows.append(row)
        print("  ".join(str(x) for x in row), flush=True)
        if os.environ.get("CART_RECOVERY_LOG"):
            with open(os.environ["CART_RECOVERY_LOG"], "a") as fh:
                fh.write(json.dumps({"seed": seed, "divergences": d.divergences, "max_rhat": d.max_rhat,
                                     **{n: {"median": est[n]["median"], "hdi_90": list(est[n]["hdi_90"]),
                                            "covered": bool(hits[n][-1])} for n in names}}) + "\n")  # as it goes: a long run that is stopped still reports
    print("\nseed  div  rhat  ess  " + "  ".join(names) + f"   (truth {', '.join(f'{truth[n]:.3f}' for n in names)})")
    for row in rows:
        print("  ".join(str(x) for x in row))
    rhat = hits.pop("max_rhat")
    return {name: float(np.mean(v)) for name, v in hits.items()}, np.array(rhat), (hits, sd_ratios)


def test_truth_of_the_story_is_the_generative_effect(truth):
    assert truth["cmax_gmr"] == pytest.approx(EFFECTS.cmax_gmr, rel=0.01)
    assert truth["persistence_half_life_ratio"] == pytest.approx(EFFECTS.persistence_half_life_ratio, rel=1e-9)


def test_cmax_gmr_interval_covers_truth_small(tmp_path, truth):
    coverage, rhat, _ = _coverage(tmp_path, seeds=(301, 302, 303), truth=truth, names=("cmax_gmr",))
    assert coverage["cmax_gmr"] >= 2 / 3
    assert np.all(rhat < 1.05), rhat


def _seed_range(default="400-439"):
    first, last = os.environ.get("CART_RECOVERY_SEEDS", default).split("-")
    return range(int(first), int(last) + 1)


@pytest.mark.slow
def test_coverage_over_40_cohorts(tmp_path, truth):
    seeds = _seed_range()
    coverage, rhat, (covered, sd_ratios) = _coverage(tmp_path, seeds=seeds, truth=truth, settings=SLOW_SETTINGS)
    print(f"90% interval coverage over {len(seeds)} cohorts:", coverage,
          f"fits with R-hat > 1.05: {int(np.sum(rhat > 1.05))}")
    for name in coverage:  # too low, too high, or the prior's own intervals (toolkit.testing.coverage_problems)
        problems = coverage_problems(covered[name], sd_ratios=sd_ratios.get(name))
        assert not problems, (name, problems)
    assert np.sum(rhat > 1.05) <= max(3, len(seeds) // 7), rhat
