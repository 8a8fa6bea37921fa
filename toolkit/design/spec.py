"""Design specs (``models/design_*.toml``): a trial's decision rule, accrual, looks and scenarios as data.

A design spec names the analysis it decides on (an analysis spec such as
``models/durability_primary.toml``, or ``"exponential_jeffreys"``, the conjugate exponential
rule used for the independent check; a CAR-T spec such as ``models/cart_primary.toml`` for a
misspecification study of the kinetic analysis, ``toolkit misspecify``), the decision rule on one estimand of
that analysis, the accrual, the follow-up after the last patient, the interim
looks and the scenarios to simulate. :func:`load_design` checks every key and
raises :class:`DesignError` naming the file, the key and the fix.

Rule. With ``theta`` the rule's estimand and ``x`` its threshold, the
posterior probability of benefit at a look is ``q = P(theta > x | data)``
(``direction = "above"``) or ``q = P(theta < x | data)`` (``"below"``). At
the final analysis the trial succeeds when ``q > success_probability``.

Interim boundaries are of one of two kinds, named in every output:

- on the *posterior* probability ``q`` (keys ``interim_success``,
  ``interim_futility``): stop for success when ``q > interim_success``, for
  futility when ``q < interim_futility``;
- on the *predictive* probability of success (keys ``interim_success_pos``,
  ``interim_futility_pos``): PoS = P(q_final > success_probability | data so
  far), the probability that the final analysis will succeed, from the look's
  fit by :func:`toolkit.design.interim.look_predictive_probability`
  (``pos_imputations`` imputed completed trials, key of ``[simulation]``); stop
  for success when PoS > ``interim_success_pos``, for futility when PoS <
  ``interim_futility_pos``. A key not given means no stop of that kind.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.simulate import Effects, TrialParameters

SECTIONS = ("title", "rationale", "analysis", "rule", "accrual", "followup", "looks", "scenarios", "simulation")
RULE_KEYS = ("estimand", "direction", "threshold", "success_probability", "interim_success", "interim_futility",
             "interim_success_pos", "interim_futility_pos")
POSTERIOR, PREDICTIVE = "posterior", "predictive"  # the two kinds of interim boundary
ACCRUAL_KEYS = ("patients_per_month", "max_patients")
FOLLOWUP_KEYS = ("final_after_last_patient_days",)
LOOK_KEYS = ("name", "patients", "events", "day", "lag_days")
SCENARIO_KEYS = ("name", "effects", "parameters", "description")
SIMULATION_KEYS = ("seed", "chains", "tune", "draws", "pos_imputations")
#: imputed completed trials behind the PoS at each interim look of a design study (MC SE <= 0.035)
POS_IMPUTATIONS = 200
ANALYTIC = "exponential_jeffreys"
#: the models an analysis spec of a design may be for: trial design studies (``toolkit design``) fit the
#: durability analysis; a misspecification study (``toolkit misspecify``) fits any of them
ANALYSIS_MODELS = ("durability", "cart", "mrd", "joint")
DAYS_PER_MONTH = 365.25 / 12
REPO = Path(__file__).resolve().parents[2]


class DesignError(ValueError):
    """A design spec that cannot be used; the message names the file, the key and the fix."""


@dataclass(frozen=True)
class Look:
    """An interim look: on the day the ``patients``-th patient is enrolled, the ``events``-th event
    happens, or on a calendar ``day`` since the first enrolment; plus ``lag_days``."""

    name: str
    patients: int | None = None
    events: int | None = None
    day: float | None = None
    lag_days: float = 0.0

    @property
    def trigger(self) -> str:
        return "patients" if self.patients is not None else "events" if self.events is not None else "day"


@dataclass(frozen=True)
class Scenario:
    name: str
    effects: dict = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)
    description: str = ""

    def effects_obj(self) -> Effects:
        return Effects().with_overrides(self.effects)

    def parameters_obj(self, *, no_admin_censoring: bool = True) -> TrialParameters:
        """The simulator's parameters; its own administrative follow-up is switched off (the design's
        calendar-time looks censor instead)."""
        from dataclasses import replace

        p = replace(TrialParameters(), **self.parameters)
        if no_admin_censoring:
            p = replace(p, followup_min_days=100 * 365.25, followup_max_days=100 * 365.25 + 1)
        return p


@dataclass(frozen=True)
class Design:
    """A validated design spec (see the module docstring)."""

    path: str
    title: str
    analysis: str  # path of an analysis spec, or ANALYTIC
    analysis_spec: dict | None
    estimand: str
    direction: str
    threshold: float
    success_probability: float
    interim_success: float
    interim_futility: float
    patients_per_month: float
    max_patients: int
    final_after_last_patient_days: float
    looks: tuple[Look, ...]
    scenarios: tuple[Scenario, ...]
    seed: int = 20261201
    sampler: dict = field(default_factory=dict)
    boundary: str = POSTERIOR  # the statistic the interim boundaries are on: POSTERIOR (q) or PREDICTIVE (PoS)
    pos_imputations: int = POS_IMPUTATIONS

    @property
    def analysis_model(self) -> str:
        """The model the analysis spec fits (``ANALYSIS_MODELS``; the analytic rule analyses durability)."""
        return "durability" if self.analysis_spec is None else str(self.analysis_spec.get("model", "durability"))

    @property
    def boundary_column(self) -> str:
        """The per-look result column the interim boundaries apply to: ``q`` or ``pos``."""
        return "pos" if self.boundary == PREDICTIVE else "q"

    def boundary_text(self) -> str:
        """The interim boundaries in words, naming their kind."""
        what = ("the predictive probability of success (PoS: the probability that the final analysis will meet "
                "the rule, given the data so far)" if self.boundary == PREDICTIVE else
                "the posterior probability of benefit")
        parts = []
        if self.interim_success < 1:
            parts.append(f"for success if {what} exceeds {self.interim_success:g}")
        if self.interim_futility > 0:
            parts.append(f"for futility if it is below {self.interim_futility:g}")
        kind = "predictive probability" if self.boundary == PREDICTIVE else "posterior probability"
        if not parts:
            return f"no stopping boundaries (the {kind} is recorded only)"
        return "stop " + " and ".join(parts) + f" (boundaries on the {kind})"

    @property
    def probability_key(self) -> str:
        """The ``summary.json`` estimand holding q (see :func:`probability_key`)."""
        return probability_key(self.estimand, self.direction, self.threshold)

    def rule_text(self) -> str:
        sign = ">" if self.direction == "above" else "<"
        return f"P({self.estimand} {sign} {self.threshold:g}) > {self.success_probability:g}"

    def scenario(self, name: str) -> Scenario:
        for s in self.scenarios:
            if s.name == name:
                return s
        raise DesignError(f"{self.path}: no scenario {name!r}; valid: {', '.join(s.name for s in self.scenarios)}")


def _num(x: float) -> str:
    return f"{x:g}"


def probability_key(estimand: str, direction: str, threshold: float) -> str:
    """Name of the posterior probability in a durability summary: ``hazard_ratio`` below x is
    ``prob_hr_below_<x>``; ``<name>`` above x is ``prob_<name>_above_<x>`` (as ``toolkit.estimands``)."""
    if estimand == "hazard_ratio" and direction == "below":
        return f"prob_hr_below_{_num(threshold)}"
    return f"prob_{estimand}_{direction}_{_num(threshold)}"


def spec_options(kind, analysis_spec: dict | None):
    """The options dataclass ``kind`` (``toolkit.fitting``'s ``DurabilityOptions``, ``CartOptions``, ...) of an
    analysis spec: the keys of ``kind`` among its ``[options]``, ``[decision]`` and ``[priors]``
    (``toolkit.specs.merged_options``)."""
    from toolkit.specs import merged_options

    fields_ = kind.__dataclass_fields__
    return kind(**{k: v for k, v in merged_options(analysis_spec, {}).items() if k in fields_})


def produced_probabilities(analysis_spec: dict | None) -> list[str]:
    """The posterior probabilities an analysis produces (names as ``toolkit.estimands.durability_estimands``)."""
    if analysis_spec is None:  # the conjugate exponential rule (toolkit.design.operating.exponential_jeffreys)
        return [probability_key("hazard_ratio", "below", x) for x in (1.0, 0.7)]
    if analysis_spec.get("model") == "cart":  # toolkit.estimands.cart_estimands
        return [probability_key(name, "above", 1.0) for name in ("cmax_gmr", "auc28_gmr")]
    if analysis_spec.get("model") == "mrd":  # toolkit.estimands.mrd.mrd_estimands
        return [probability_key("clearance_rate_ratio", "above", 1.0)]
    if analysis_spec.get("model") == "joint":  # toolkit.estimands.joint.joint_estimands
        from toolkit.fitting import JointOptions

        opts = spec_options(JointOptions, analysis_spec)
        ratios = ["hazard_ratio_total", "hazard_ratio_direct", "hazard_ratio_indirect"]
        if "mrd_clearance" in opts.associations:
            ratios += ["hazard_ratio_indirect_cart", "hazard_ratio_indirect_mrd"]
        return [probability_key(name, "below", x) for name in ratios for x in opts.hr_below]
    from toolkit.fitting import DurabilityOptions

    opts = spec_options(DurabilityOptions, analysis_spec)
    names = [probability_key("hazard_ratio", "below", x) for x in opts.hr_below]
    for d in opts.days:
        names += [probability_key(f"rfs_{d}d_difference", "above", x) for x in opts.rfs_difference_above]
        if opts.endpoint == "efs":
            names += [probability_key(f"efs_{d}d_difference", "above", x) for x in opts.rfs_difference_above]
    return names


def _table(path, spec, key) -> dict:
    value = spec.get(key, {})
    if not isinstance(value, dict):
        raise DesignError(f"{path}: {key} must be a [{key}] table of `key = value` lines")
    return value


def _unknown(path, where: str, table: dict, valid) -> None:
    bad = sorted(set(table) - set(valid))
    if bad:
        raise DesignError(f"{path}: unknown key(s) {', '.join(bad)} in {where}; valid: {', '.join(valid)}")


def _positive(path, where, value, *, integer=False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if ok and integer:
        ok = float(value).is_integer()
    if not ok:
        kind = "a positive whole number" if integer else "a positive number"
        raise DesignError(f"{path}: {where} must be {kind}, got {value!r}")
    return int(value) if integer else float(value)


def _probability(path, where, value) -> float:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1):
        raise DesignError(f"{path}: {where} must be a probability between 0 and 1, got {value!r}")
    return float(value)


def load_design(path: str | Path) -> Design:
    """Read and validate a design spec; every problem raises :class:`DesignError` naming key and fix."""
    from toolkit.specs import read_toml

    path = Path(path)
    spec = read_toml(path, error=DesignError, folder_hint="give a design spec file such as models/design_primary.toml",
                     missing="design spec not found")
    _unknown(path, "the file", spec, SECTIONS)

    # the analysis the rule decides on
    analysis_table = _table(path, spec, "analysis")
    _unknown(path, "[analysis]", analysis_table, ("spec",))
    analysis = analysis_table.get("spec")
    if not isinstance(analysis, str):
        raise DesignError(f"{path}: [analysis] spec must name an analysis spec (e.g. "
                          f"\"models/durability_primary.toml\") or \"{ANALYTIC}\"")
    analysis_spec = None
    if analysis != ANALYTIC:
        from toolkit.specs import SpecError, load_spec

        candidate = Path(analysis)
        if not candidate.is_absolute() and not candidate.exists():
            candidate = REPO / analysis  # relative to the repository, as the shipped specs are written
        try:
            analysis_spec = load_spec(candidate)
        except SpecError as err:
            raise DesignError(f"{path}: [analysis] spec: {err}") from err
        if analysis_spec.get("model") not in ANALYSIS_MODELS:
            raise DesignError(f"{path}: [analysis] spec is a spec for model {analysis_spec.get('model')!r}; a design "
                              f"analyses a spec for {', '.join(ANALYSIS_MODELS[:-1])} or {ANALYSIS_MODELS[-1]} (e.g. "
                              "\"models/durability_primary.toml\")")
        analysis = str(candidate)

    rule = _table(path, spec, "rule")
    _unknown(path, "[rule]", rule, RULE_KEYS)
    estimand = rule.get("estimand")
    direction = rule.get("direction", "above")
    if direction not in ("above", "below"):
        raise DesignError(f"{path}: [rule] direction must be \"above\" or \"below\", got {direction!r}")
    threshold = rule.get("threshold", 1.0 if direction == "below" else 0.0)
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool):
        raise DesignError(f"{path}: [rule] threshold must be a number, got {threshold!r}")
    if not isinstance(estimand, str):
        raise DesignError(f"{path}: [rule] estimand must name an estimand of the analysis (e.g. \"hazard_ratio\")")
    key = probability_key(estimand, direction, threshold)
    produced = produced_probabilities(analysis_spec)
    if key not in produced:
        raise DesignError(f"{path}: [rule] P({estimand} {direction} {threshold:g}) is not produced by the analysis "
                          f"{analysis_table['spec']}: it reports {', '.join(produced)}; choose one of those, or add "
                          "the threshold to that analysis spec's [decision] and its horizon to its days")
    success = _probability(path, "[rule] success_probability", rule.get("success_probability", 0.95))
    pos_keys = [k for k in ("interim_success_pos", "interim_futility_pos") if k in rule]
    post_keys = [k for k in ("interim_success", "interim_futility") if k in rule]
    if pos_keys and post_keys:
        raise DesignError(f"{path}: [rule] has boundaries on the posterior probability ({', '.join(post_keys)}) and "
                          f"on the predictive probability ({', '.join(pos_keys)}); keep one kind")
    boundary, suffix, default_success = (PREDICTIVE, "_pos", 1.0) if pos_keys else (POSTERIOR, "", 0.99)
    interim_success = _probability(path, f"[rule] interim_success{suffix}",
                                   rule.get(f"interim_success{suffix}", default_success))
    interim_futility = _probability(path, f"[rule] interim_futility{suffix}",
                                    rule.get(f"interim_futility{suffix}", 0.0))
    if interim_futility >= interim_success:
        raise DesignError(f"{path}: [rule] interim_futility{suffix} ({interim_futility:g}) must be below "
                          f"interim_success{suffix} ({interim_success:g})")
    if boundary == PREDICTIVE:
        import re

        if analysis_spec is None:
            raise DesignError(f"{path}: [rule] {', '.join(pos_keys)}: boundaries on the predictive probability need "
                              "a model analysis ([analysis] spec = an analysis spec such as "
                              "\"models/durability_primary.toml\"); or use interim_success / interim_futility")
        if not (estimand == "hazard_ratio" or re.fullmatch(r"(rfs|efs)_\d+d_difference", estimand)):
            raise DesignError(f"{path}: [rule] {', '.join(pos_keys)}: no predictive probability for the estimand "
                              f"{estimand!r} (supported: hazard_ratio, rfs_<D>d_difference, efs_<D>d_difference); "
                              "use interim_success / interim_futility")

    accrual = _table(path, spec, "accrual")
    _unknown(path, "[accrual]", accrual, ACCRUAL_KEYS)
    rate = _positive(path, "[accrual] patients_per_month", accrual.get("patients_per_month"))
    max_n = _positive(path, "[accrual] max_patients", accrual.get("max_patients"), integer=True)
    if max_n < 4:
        raise DesignError(f"{path}: [accrual] max_patients must be at least 4 (two an arm), got {max_n}")
    follow = _table(path, spec, "followup")
    _unknown(path, "[followup]", follow, FOLLOWUP_KEYS)
    final_fu = _positive(path, "[followup] final_after_last_patient_days",
                         follow.get("final_after_last_patient_days"))

    looks_raw = spec.get("looks", [])
    if not isinstance(looks_raw, list):
        raise DesignError(f"{path}: looks must be [[looks]] tables, one an interim look")
    looks = []
    expected_months = max_n / rate
    for i, raw in enumerate(looks_raw, start=1):
        where = f"[[looks]] number {i}"
        if not isinstance(raw, dict):
            raise DesignError(f"{path}: {where} must be a table")
        _unknown(path, where, raw, LOOK_KEYS)
        given = [k for k in ("patients", "events", "day") if k in raw]
        if len(given) != 1:
            raise DesignError(f"{path}: {where} needs exactly one of patients, events or day "
                              f"(got {', '.join(given) or 'none'})")
        trigger = given[0]
        value = _positive(path, f"{where} {trigger}", raw[trigger], integer=trigger != "day")
        if trigger == "patients" and value > max_n:
            raise DesignError(f"{path}: {where} is at patient {value}, beyond the maximum sample size "
                              f"{max_n} ([accrual] max_patients); a look must come before the final analysis")
        if trigger == "events" and value > max_n:
            raise DesignError(f"{path}: {where} waits for {value} events, more than the {max_n} patients the "
                              "design enrols; lower it")
        if trigger == "day" and value >= expected_months * DAYS_PER_MONTH + final_fu:
            raise DesignError(f"{path}: {where} on day {value:g} is after the expected final analysis (day "
                              f"{expected_months * DAYS_PER_MONTH + final_fu:.0f}); move it earlier")
        lag = raw.get("lag_days", 0.0)
        if not isinstance(lag, (int, float)) or lag < 0:
            raise DesignError(f"{path}: {where} lag_days must be a number of days >= 0, got {lag!r}")
        looks.append(Look(name=str(raw.get("name", f"interim {i}")), lag_days=float(lag), **{trigger: value}))

    scen_raw = spec.get("scenarios", [])
    if not isinstance(scen_raw, list) or not scen_raw:
        raise DesignError(f"{path}: give at least one [[scenarios]] table (name, effects)")
    scenarios, seen = [], set()
    for i, raw in enumerate(scen_raw, start=1):
        where = f"[[scenarios]] number {i}"
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise DesignError(f"{path}: {where} needs a name")
        _unknown(path, where, raw, SCENARIO_KEYS)
        if raw["name"] in seen:
            raise DesignError(f"{path}: {where}: the scenario name {raw['name']!r} is used twice")
        seen.add(raw["name"])
        effects = raw.get("effects", {})
        try:
            Effects().with_overrides(effects)
        except (ValueError, TypeError) as err:
            raise DesignError(f"{path}: {where} effects: {err}") from err
        params = raw.get("parameters", {})
        valid = TrialParameters.__dataclass_fields__
        _unknown(path, f"{where} parameters", params, list(valid))
        scenarios.append(Scenario(raw["name"], dict(effects), dict(params), str(raw.get("description", ""))))

    sim = _table(path, spec, "simulation")
    _unknown(path, "[simulation]", sim, SIMULATION_KEYS)
    seed = sim.get("seed", 20261201)
    if not (isinstance(seed, int) and 0 <= seed < 2**32):
        raise DesignError(f"{path}: [simulation] seed must be a whole number from 0 to 4294967295")
    sampler = {k: _positive(path, f"[simulation] {k}", v, integer=True) for k, v in sim.items()
               if k not in ("seed", "pos_imputations")}
    pos_imputations = _positive(path, "[simulation] pos_imputations", sim.get("pos_imputations", POS_IMPUTATIONS),
                                integer=True)
    return Design(path=str(path), title=str(spec.get("title", path.stem)), analysis=analysis,
                  analysis_spec=analysis_spec, estimand=estimand, direction=direction, threshold=float(threshold),
                  success_probability=success, interim_success=interim_success, interim_futility=interim_futility,
                  patients_per_month=rate, max_patients=max_n, final_after_last_patient_days=final_fu,
                  looks=tuple(looks), scenarios=tuple(scenarios), seed=seed, sampler=sampler, boundary=boundary,
                  pos_imputations=pos_imputations)


def analysis_settings(design: Design, **overrides):
    """Options and sampler settings of the design's analysis: the analysis spec's, then the design's
    ``[simulation]`` sampler keys, then ``overrides`` (None = not given). Same path as ``toolkit fit``."""
    from toolkit.fitting import CartOptions, DurabilityOptions, JointOptions, MrdOptions, default_settings
    from toolkit.specs import merged_sampler

    model = design.analysis_model
    kind = {"cart": CartOptions, "mrd": MrdOptions, "joint": JointOptions}.get(model, DurabilityOptions)
    options = spec_options(kind, design.analysis_spec)
    sampler = merged_sampler(design.analysis_spec, {**design.sampler, **overrides})
    settings = default_settings(model, **sampler, progressbar=False)
    return options, settings


def require_durability_analysis(design: Design, command: str) -> None:
    """Refuse a design whose analysis is not the durability analysis for ``command`` (a trial design study
    simulates interim looks of the durability analysis; the CAR-T analysis is for ``toolkit misspecify``)."""
    if design.analysis_model != "durability":
        raise DesignError(f"{design.path}: [analysis] spec is a {design.analysis_model} analysis; `{command}` runs "
                          "the durability analysis at each look: name a durability spec (e.g. "
                          "\"models/durability_primary.toml\"), or use `toolkit misspecify` for this one")

