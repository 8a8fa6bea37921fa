"""The fits' own sampling extension (MRD, CAR-T, joint) (``toolkit.fitting.sample_extending``): budget, verdict, record.

The sampler and the verdict are replaced by fakes, so these tests run in milliseconds and show what is
rerun or continued, with which settings, and when the loop stops.
"""

import pytest

from toolkit import fitting
from toolkit.fitting import MAX_EXTENSIONS, CartOptions, JointOptions, MrdOptions, sample_extending
from toolkit.inference import Diagnostics, SamplerSettings


class _Posterior(dict):
    def __init__(self, draws):
        super().__init__(posterior=_Group())
        self.attrs = {"sampling_seconds": 1.0}
        self.draws = draws


class _Group:
    data_vars = ["x"]


def _fake(monkeypatch, verdicts):
    """``sample`` records its settings; ``diagnose`` returns the next verdict: (converged, divergences)."""
    calls, queue = _Calls(), list(verdicts)

    def sample(model, settings):
        calls.append(settings)
        return _Posterior(settings.draws)

    def diagnose(posterior, var_names=None):
        converged, divergences, *mixed = queue.pop(0)  # mixed: R-hat and ESS passed (a third element, True)
        mixed = bool(mixed and mixed[0])
        problems = ([] if mixed else ["max R-hat 1.030 > 1.01"]) + ([f"{divergences} divergent"] if divergences
                                                                     else [])
        return Diagnostics(max_rhat=1.0 if converged or mixed else 1.03,
                           min_ess_bulk=800 if converged or mixed else 200, min_ess_tail=700,
                           divergences=divergences, min_bfmi=0.9, converged=converged,
                           problems=[] if converged else problems)

    class Run:
        """A continuing nutpie run (``toolkit.inference.NutpieRun``): records its settings, checkpoints, resumes."""

        def __init__(self, settings, max_draws):
            self.settings, self.max_draws, self.checkpoints, self.resumed, self.stopped = (
                settings, max_draws, [], 0, False)
            runs.append(self)

        def first(self, n):
            assert n <= self.max_draws and not self.stopped
            self.checkpoints.append(n)
            return _Posterior(n)

        def resume(self):
            self.resumed += 1

        def stop(self):
            self.stopped = True

    runs = []
    monkeypatch.setattr(fitting, "sample", sample)
    monkeypatch.setattr(fitting, "diagnose", diagnose)
    monkeypatch.setattr(fitting, "open_nutpie_run", lambda model, settings, max_draws, **_: Run(settings, max_draws))
    calls.runs = runs
    return calls


class _Calls(list):
    runs: list


# a backend that cannot continue a run (PyMC's NUTS): every rerun is a fresh run ("what-failed")
SETTINGS = SamplerSettings(backend="pymc", chains=4, tune=1000, draws=1000, random_seed=7, progressbar=False)
NUTPIE = SamplerSettings(chains=4, tune=1000, draws=1000, random_seed=7, progressbar=False)


def test_a_failed_verdict_is_rerun_with_doubled_draws_until_it_passes(monkeypatch):
    calls = _fake(monkeypatch, [(False, 0), (False, 0), (True, 0)])
    posterior, kept, attempts = sample_extending(None, SETTINGS, extensions=2)
    assert [s.draws for s in calls] == [1000, 2000, 4000] and [s.tune for s in calls] == [1000] * 3
    assert [s.random_seed for s in calls] == [7, 8, 9]
    assert kept.draws == 4000 and posterior.draws == 4000  # the last run is kept and judged
    assert [a["converged"] for a in attempts] == [False, False, True]
    assert attempts[0]["max_rhat"] == 1.03 and attempts[-1]["draws"] == 4000


def test_the_budget_is_a_hard_limit_and_the_verdict_stays(monkeypatch):
    calls = _fake(monkeypatch, [(False, 0)] * 3)
    _, kept, attempts = sample_extending(None, SETTINGS, extensions=1)
    assert len(calls) == 2 and kept.draws == 2000 and not attempts[-1]["converged"]


def test_a_passing_first_run_and_quick_looks_are_not_rerun(monkeypatch):
    calls = _fake(monkeypatch, [(True, 0)])
    sample_extending(None, SETTINGS, extensions=2)
    assert len(calls) == 1
    calls = _fake(monkeypatch, [(False, 0)])  # 2 x 200 draws: a quick look whose ESS cannot reach 400
    sample_extending(None, SamplerSettings(backend="pymc", chains=2, tune=200, draws=200, progressbar=False),
                     extensions=2)
    assert len(calls) == 1


def test_divergences_rerun_with_a_smaller_step_size(monkeypatch):
    """A run that diverged is rerun with target_accept halfway to 1; one without keeps the previous value."""
    calls = _fake(monkeypatch, [(False, 3), (False, 0), (True, 0)])
    _, kept, attempts = sample_extending(None, SETTINGS, extensions=2)
    assert [s.target_accept for s in calls] == [0.9, 0.95, 0.95]
    assert [s.draws for s in calls] == [1000, 2000, 4000] and kept.target_accept == 0.95
    assert [a["target_accept"] for a in attempts] == [0.9, 0.95, 0.95]
    calls = _fake(monkeypatch, [(False, 1), (False, 2), (False, 1)])  # the budget stays a hard limit
    _, kept, attempts = sample_extending(None, SETTINGS, extensions=2)
    assert [s.target_accept for s in calls] == [0.9, 0.95, 0.975] and not attempts[-1]["converged"]


def test_a_run_that_failed_on_divergences_alone_keeps_its_draws(monkeypatch):
    """More draws would only add chances of a divergence: the rerun keeps the draws and lowers the step size;
    draws double again after a run whose R-hat or ESS failed."""
    calls = _fake(monkeypatch, [(False, 0), (False, 2, True), (False, 1), (True, 0)])
    _, kept, attempts = sample_extending(None, SETTINGS, extensions=3)
    assert [s.draws for s in calls] == [1000, 2000, 2000, 4000]
    assert [s.target_accept for s in calls] == [0.9, 0.9, 0.95, 0.975]
    assert [s.random_seed for s in calls] == [7, 8, 9, 10] and kept.draws == 4000


def test_nutpie_continues_the_same_chains_and_restarts_only_after_divergences(monkeypatch):
    """Policy "continue": R-hat/ESS failures continue one run (same seed, tuning once) to twice the draws; a run
    with divergences starts a new run at the higher target_accept, with room for the doublings still allowed."""
    calls = _fake(monkeypatch, [(False, 0), (False, 0), (True, 0)])
    posterior, kept, attempts = sample_extending(None, NUTPIE, extensions=3)
    assert calls == [] and len(calls.runs) == 1  # no fresh run: one run, judged at three checkpoints
    (run,) = calls.runs
    assert run.max_draws == 8000 and run.checkpoints == [1000, 2000, 4000] and run.resumed == 2 and run.stopped
    assert kept.draws == 4000 and kept.random_seed == 7 and posterior.draws == 4000
    assert [a["continued"] for a in attempts] == [False, True, True] and attempts[-1]["converged"]
    assert [a["sampling_seconds"] for a in attempts] == [1.0, 0.0, 0.0]  # each attempt's own time

    calls = _fake(monkeypatch, [(False, 0), (False, 2), (False, 1, True), (True, 0)])
    _, kept, attempts = sample_extending(None, NUTPIE, extensions=3)
    first, second, third = calls.runs
    assert [r.checkpoints for r in calls.runs] == [[1000, 2000], [4000], [4000]]
    assert [r.max_draws for r in calls.runs] == [8000, 8000, 4000] and all(r.stopped for r in calls.runs)
    assert [r.settings.target_accept for r in calls.runs] == [0.9, 0.95, 0.975]
    assert [r.settings.random_seed for r in calls.runs] == [7, 9, 10]
    assert [a["continued"] for a in attempts] == [False, True, False, False]
    assert kept.draws == 4000 and kept.target_accept == 0.975


def test_nutpie_without_reruns_or_for_a_quick_look_samples_once(monkeypatch):
    calls = _fake(monkeypatch, [(False, 0)])
    sample_extending(None, NUTPIE, extensions=0)
    assert len(calls) == 1 and calls.runs == []
    calls = _fake(monkeypatch, [(False, 0)])
    sample_extending(None, SamplerSettings(chains=2, tune=200, draws=200, progressbar=False), extensions=2)
    assert len(calls) == 1 and calls.runs == []


@pytest.mark.parametrize("options", [MrdOptions, CartOptions, JointOptions])
@pytest.mark.parametrize("bad", [-1, MAX_EXTENSIONS + 1, 1.5, "2", True])
def test_extend_sampling_must_be_a_small_whole_number(bad, options):
    with pytest.raises(ValueError, match=f"extend_sampling must be a whole number from 0 to {MAX_EXTENSIONS}"):
        options(extend_sampling=bad)


def test_a_bad_extend_sampling_in_a_spec_names_the_file(tmp_path):
    from toolkit.fitting import resolve_options
    from toolkit.specs import SpecError, load_spec

    spec_file = tmp_path / "mrd_bad.toml"
    spec_file.write_text('model = "mrd"\n[options]\nextend_sampling = 9\n')
    with pytest.raises(SpecError, match=r"mrd_bad\.toml: extend_sampling must be a whole number"):
        resolve_options("mrd", load_spec(spec_file, model="mrd"))


def test_the_primary_spec_states_its_budget():
    from toolkit.fitting import resolve_options
    from toolkit.specs import load_spec, shipped_spec

    for model, reruns in (("mrd", 4), ("cart", 4), ("joint", 4)):
        spec = load_spec(shipped_spec(f"models/{model}_primary.toml"), model=model)
        assert resolve_options(model, spec).extend_sampling == reruns


def test_the_fits_warning_says_how_it_was_extended():
    """`toolkit fit`'s warning names continued chains and new runs apart (``record_extensions``)."""
    from types import SimpleNamespace

    from toolkit.fitting import record_extensions

    first = {"chains": 4, "draws": 1000, "max_rhat": 1.03, "min_ess_bulk": 210}
    result = SimpleNamespace(provenance={}, summary={"warnings": []})
    attempts = [first | {"continued": False}, {"continued": True}, {"continued": False}, {"continued": True}]
    record_extensions(result, attempts, NUTPIE, 3)
    (warning,) = result.summary["warnings"]
    assert "(max R-hat 1.030, min bulk ESS 210, divergences 0)" in warning
    assert ("sampling was rerun 1 time(s) (more draws, or a smaller step size after divergences) and its chains "
            "were continued 2 time(s) to twice the draws") in warning
    assert result.provenance["sampling_attempts"] is attempts
    result = SimpleNamespace(provenance={}, summary={"warnings": []})
    record_extensions(result, [first, {}], SETTINGS, 1)
    assert "sampling was rerun 1 time(s)" in result.summary["warnings"][0]
    assert "continued" not in result.summary["warnings"][0]
