"""What a statistician checks before signing: parameter summary, trace/rank plots, prior sensitivity.

Functions return data (DataFrames, matplotlib figures) or small self-contained HTML
fragments, so the report, the notebooks and the CLI share them:

- :func:`summary_table` -- ArviZ summary (mean, sd, 90% HDI, MCSE, bulk/tail ESS, R-hat)
  of every posterior variable, population-level parameters first;
- :func:`trace_rank_figures` -- trace and rank plots (``arviz_plots``) of the
  population-level parameters (hyperparameters and the arm-level quantities behind
  each decision estimand);
- :func:`sensitivity_table` -- power-scaling prior sensitivity (Kallioinen et al. 2024)
  of every hyperparameter and estimand, labelled "prior-data conflict",
  "prior-dominated" or "fine", beside the estimands of runs fitted with the other
  prior sets when given;
- :func:`diagnostics_appendix` and :func:`sensitivity_section` -- the HTML fragments.

References
----------
1. Kallioinen N, Paananen T, Bürkner P-C, Vehtari A. Detecting and diagnosing prior
   and likelihood sensitivity with power-scaling. Statistics and Computing 34, 57 (2024).
2. Vehtari A, Gelman A, Simpson D, Carpenter B, Bürkner P-C. Rank-normalization,
   folding, and localization: an improved R-hat for assessing convergence of MCMC.
   Bayesian Analysis 16(2), 667-718 (2021).
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

__all__ = [
    "ESTIMAND_DRAWS",
    "LOG_PRIOR",
    "SensitivityUnavailable",
    "diagnostics_appendix",
    "has_sensitivity_groups",
    "parameter_level",
    "prior_sensitivity",
    "sensitivity_section",
    "sensitivity_table",
    "summary_table",
    "trace_rank_figures",
    "write_summary_table",
]

SAMPLE_DIMS = ("chain", "draw")
# Dimensions that index patients, samples or the non-centred per-patient entries: a variable with one of
# them (or with more than POPULATION_MAX_SIZE elements in a dimension) is patient-level.
PATIENT_DIMS = frozenset({"patient", "infused", "responder", "sample", "assessment", "noncentered_entry",
                          "centered_entry", "visit"})
POPULATION_MAX_SIZE = 12
SUMMARY_CSV = "parameter_summary.csv"
LOG_PRIOR = "log_prior"
ESTIMAND_DRAWS = "estimand_draws"
PSENSE_THRESHOLD = 0.05
LABEL_CONFLICT = "prior-data conflict"
LABEL_PRIOR_DOMINATED = "prior-dominated"
LABEL_FINE = "fine"


class SensitivityUnavailable(ValueError):
    """A run without the groups power-scaling needs (``log_prior``, ``log_likelihood``)."""


# --------------------------------------------------------------------------- summary table


def parameter_level(da: xr.DataArray) -> str:
    """``"population"`` for a hyperparameter or arm-level quantity, ``"patient"`` for a per-patient vector."""
    for dim in da.dims:
        if dim in SAMPLE_DIMS:
            continue
        if dim in PATIENT_DIMS or da.sizes[dim] > POPULATION_MAX_SIZE:
            return "patient"
    return "population"


def _ordered_variables(post: xr.Dataset) -> list[str]:
    names = list(post.data_vars)
    return ([n for n in names if parameter_level(post[n]) == "population"]
            + [n for n in names if parameter_level(post[n]) == "patient"])


def summary_table(dt: xr.DataTree, *, ci_prob: float = 0.9) -> pd.DataFrame:
    """ArviZ summary of every posterior variable, population-level parameters first.

    Columns: ``variable``, ``level`` (population/patient), ``mean``, ``sd``,
    ``hdi<100 ci_prob>_lb``/``_ub`` (highest-density interval), ``mcse_mean``, ``mcse_sd``,
    ``ess_bulk``, ``ess_tail``, ``r_hat`` (rank-normalised split R-hat, ref. 2). Elements that
    are constant over draws have NaN R-hat/ESS. The index is ArviZ's element label, e.g.
    ``arm_effect[cmax]``.
    """
    import arviz_stats as azs

    post = dt["posterior"].to_dataset()
    order = _ordered_variables(post)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        table = azs.summary(dt, var_names=order, ci_kind="hdi", ci_prob=ci_prob, round_to="none")
    variable, level = [], []
    for label in table.index:
        name = str(label).split("[", 1)[0]
        variable.append(name)
        level.append(parameter_level(post[name]))
    table.insert(0, "level", level)
    table.insert(0, "variable", variable)
    table.index.name = "parameter"
    return table


def write_summary_table(run, folder: str | Path | None = None) -> Path:
    """Write :func:`summary_table` of ``run`` as ``parameter_summary.csv`` into ``folder``.

    ``folder`` defaults to the run folder itself, which is only right while the run is
    being saved (:meth:`toolkit.fitting.FitResult.save` does this, before the manifest
    seals the folder); on demand, give another folder.
    """
    folder = Path(folder) if folder is not None else Path(run.path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SUMMARY_CSV
    summary_table(run.posterior).to_csv(path, float_format="%.6g")
    return path


def patient_level_digest(table: pd.DataFrame) -> pd.DataFrame:
    """One row per patient-level variable: elements, worst R-hat, smallest bulk and tail ESS."""
    rows = table[table["level"] == "patient"]
    if rows.empty:
        return pd.DataFrame(columns=["variable", "elements", "max_r_hat", "min_ess_bulk", "min_ess_tail"])
    grouped = rows.groupby("variable", sort=False)
    return pd.DataFrame({"elements": grouped.size(), "max_r_hat": grouped["r_hat"].max(),
                         "min_ess_bulk": grouped["ess_bulk"].min(),
                         "min_ess_tail": grouped["ess_tail"].min()}).reset_index()


def failure_level_sentence(table: pd.DataFrame) -> str:
    """For a fit that failed its verdict: whether the failure sits in patient-level parameters only, from
    :func:`summary_table` (R-hat and ESS against the verdict's thresholds). Empty when a population-level
    quantity fails too, or when nothing in the table fails (the failure is divergences or the sampler's
    statistics, stated beside it)."""
    from toolkit.verdict import ESS_MIN, RHAT_MAX

    def failing(rows: pd.DataFrame) -> pd.DataFrame:
        return rows[(rows["r_hat"] > RHAT_MAX) | (rows["ess_bulk"] < ESS_MIN) | (rows["ess_tail"] < ESS_MIN)]

    population, patient = table[table["level"] == "population"], table[table["level"] == "patient"]
    if not failing(population).empty or failing(patient).empty:
        return ""
    digest = patient_level_digest(failing(patient))
    worst = ", ".join(f"{r.variable} (R-hat up to {r.max_r_hat:.3f}, bulk/tail ESS down to "
                      f"{r.min_ess_bulk:.0f}/{r.min_ess_tail:.0f})" for r in digest.itertuples())
    return (f"Where it fails: patient-level parameters only: {worst}. Every population-level quantity, the arm "
            f"comparisons included, passes (R-hat at most {population['r_hat'].max():.3f}, bulk/tail ESS at least "
            f"{population['ess_bulk'].min():.0f}/{population['ess_tail'].min():.0f}). The chains disagree about "
            "some patients' own values (for example a patient whose data two different curves explain about "
            "equally); the population numbers are less affected than the verdict alone suggests, but stay "
            "provisional until the fit converges.")


def failure_level_of_run(run_dir, posterior=None) -> str:
    """:func:`failure_level_sentence` of a run: from its ``parameter_summary.csv`` (written with the run), else
    from ``posterior`` (a run written before the table was), else empty."""
    saved = Path(run_dir) / SUMMARY_CSV
    if saved.is_file():
        return failure_level_sentence(pd.read_csv(saved))
    return failure_level_sentence(summary_table(posterior)) if posterior is not None else ""


# --------------------------------------------------------------------------- trace and rank plots

# Non-centred auxiliaries (standard-normal draws that the model rescales): their natural-scale
# counterparts (e.g. ``arm_effect`` for ``arm_effect_std``) are what a reviewer reads.
_AUXILIARY_SUFFIXES = ("_std", "_z", "_raw")


def plotted_parameters(dt: xr.DataTree, *, max_elements: int = 24) -> list[str]:
    """Population-level posterior variables to draw, non-centred auxiliaries left out, at most
    ``max_elements`` scalar panels (variables are taken in posterior order until the budget is spent)."""
    post = dt["posterior"].to_dataset()
    chosen, used = [], 0
    for name in _ordered_variables(post):
        da = post[name]
        if parameter_level(da) != "population" or name.endswith(_AUXILIARY_SUFFIXES):
            continue
        size = int(np.prod([da.sizes[d] for d in da.dims if d not in SAMPLE_DIMS], dtype=int))
        if used + size > max_elements:
            continue
        chosen.append(name)
        used += size
    return chosen


def trace_rank_figures(dt: xr.DataTree, var_names: list[str] | None = None) -> dict:
    """Trace (with marginal densities) and rank plots of ``var_names`` (default
    :func:`plotted_parameters`) with ``arviz_plots`` on matplotlib.

    Returns ``{"trace": Figure, "rank": Figure}``; the caller saves or closes them.
    Chains that agree give overlapping traces and rank ECDFs inside the envelope.
    """
    import arviz_plots as azp
    import matplotlib

    matplotlib.use("Agg", force=False)
    names = var_names if var_names is not None else plotted_parameters(dt)
    if not names:
        raise ValueError("no population-level parameters to plot")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trace = azp.plot_trace_dist(dt, var_names=names, backend="matplotlib")
        rank = azp.plot_rank(dt, var_names=names, backend="matplotlib")
    return {"trace": trace.viz["figure"].item(), "rank": rank.viz["figure"].item()}


def _figure_html(fig, alt: str) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" style="max-width:100%" src="data:image/png;base64,{data}">'


def _table_html(frame: pd.DataFrame, *, index: bool = True) -> str:
    def fmt(x):
        if isinstance(x, (float, np.floating)):
            return "—" if not math.isfinite(x) else f"{x:.3g}"
        return html.escape(str(x))

    return frame.to_html(index=index, formatters={c: fmt for c in frame.columns}, escape=False, border=0,
                         classes="review-table", na_rep="—")


def diagnostics_appendix(run, *, figures: bool = True) -> str:
    """HTML fragment: sampler verdict, parameter summary (population-level rows in full,
    patient-level vectors one line each) and the trace and rank plots.

    Shows no patient code: patient-level vectors are summarised per variable.
    """
    d = run.summary.get("diagnostics", {})
    title = html.escape(str(run.summary.get("model", "run")))
    share = d.get("max_treedepth_share")
    verdict = "passed" if d.get("converged") else "FAILED (every number is provisional)"
    parts = [f'<section class="review-diagnostics"><h3>Diagnostics appendix: {title}</h3>',
             f"<p>Sampler diagnostics {verdict}. Divergences: {int(d.get('divergences', 0))}; "
             f"share of draws at the maximum tree depth: "
             f"{'not recorded' if share is None else f'{100 * share:.1f}%'}.</p>"]
    if d.get("problems"):
        parts.append("<ul>" + "".join(f"<li>{html.escape(str(p))}</li>" for p in d["problems"]) + "</ul>")
    table = summary_table(run.posterior)
    where = failure_level_sentence(table) if not d.get("converged") else ""
    if where:
        parts.append(f"<p>{html.escape(where)}</p>")
    population = table[table["level"] == "population"].drop(columns=["level"])
    parts.append("<h4>Population-level parameters</h4>" + _table_html(population))
    digest = patient_level_digest(table)
    if not digest.empty:
        parts.append("<h4>Patient-level parameters (one line per vector)</h4>" + _table_html(digest, index=False))
    if figures:
        try:
            figs = trace_rank_figures(run.posterior)
        except ValueError:
            figs = {}
        for kind, fig in figs.items():
            parts.append(f"<h4>{kind.capitalize()} plots</h4>" + _figure_html(fig, f"{kind} plot of {title}"))
    parts.append("</section>")
    return "\n".join(parts)


# --------------------------------------------------------------------------- prior sensitivity


def has_sensitivity_groups(dt: xr.DataTree) -> bool:
    """True if ``dt`` has the ``log_prior`` and ``log_likelihood`` groups power-scaling needs."""
    return LOG_PRIOR in dt.children and "log_likelihood" in dt.children


def _analyst_priors(dt: xr.DataTree) -> list[str]:
    """The ``log_prior`` variables of the analyst's priors: population-level ones.

    Per-patient terms (the non-centred standard-normal entries) are the hierarchical
    population model, not a prior choice; ref. 1 (Section 5) recommends power-scaling only
    the top-level priors of hierarchical models, so they are left out.
    """
    lp = dt[LOG_PRIOR].to_dataset()
    return [n for n in lp.data_vars if not str(n).startswith("patient::")]


def _label(prior: float, likelihood: float, threshold: float) -> str:
    if prior >= threshold and likelihood >= threshold:
        return LABEL_CONFLICT
    if prior >= threshold > likelihood:
        return LABEL_PRIOR_DOMINATED
    return LABEL_FINE


def prior_sensitivity(dt: xr.DataTree, *, threshold: float = PSENSE_THRESHOLD,
                      var_names: list[str] | None = None) -> pd.DataFrame:
    """Power-scaling sensitivity of hyperparameters and estimands (ref. 1).

    The prior (its top-level terms, see :func:`_analyst_priors`) and the likelihood are
    each raised to a power alpha in [0.99, 1.01]; the posterior under each perturbation is
    obtained by Pareto-smoothed importance weights ``w ∝ p(θ)^(alpha-1)`` (resp. the
    likelihood), and the sensitivity of a quantity is the derivative of the cumulative
    Jensen-Shannon distance between perturbed and unperturbed posterior, divided by
    ``|log2 alpha|`` (``arviz_stats.psense``). Following ref. 1 (Section 4), a value of
    0.05 or more is sensitive: prior and likelihood both sensitive is
    ``"prior-data conflict"``; the prior sensitive and the likelihood not is
    ``"prior-dominated"`` (the data say little); otherwise ``"fine"``.

    Quantities: population-level posterior variables (:func:`parameter_level`) and the
    scalar estimands whose draws the fit stored in group ``estimand_draws``.

    Returns
    -------
    DataFrame
        Index ``quantity``; columns ``kind`` (parameter/estimand), ``prior``,
        ``likelihood`` (sensitivities), ``diagnosis``.
    """
    import arviz_stats as azs

    if not has_sensitivity_groups(dt):
        raise SensitivityUnavailable("the run has no log_prior or log_likelihood group")
    post = dt["posterior"].to_dataset()
    names = var_names if var_names is not None else [n for n in post.data_vars
                                                     if parameter_level(post[n]) == "population"]
    pieces = {"posterior": post[names]}
    if ESTIMAND_DRAWS in dt.children:
        pieces["estimand"] = dt[ESTIMAND_DRAWS].to_dataset()
    frames = []
    prior_names = _analyst_priors(dt)
    for kind, ds in pieces.items():
        if not ds.data_vars:
            continue
        tree = xr.DataTree.from_dict({"posterior": ds, LOG_PRIOR: dt[LOG_PRIOR].to_dataset(),
                                      "log_likelihood": dt["log_likelihood"].to_dataset()})
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            values = {}
            for component in ("prior", "likelihood"):
                group = LOG_PRIOR if component == "prior" else "log_likelihood"
                chosen = prior_names if component == "prior" else list(tree[group].to_dataset().data_vars)
                if _constant_total(tree[group].to_dataset()[chosen]):
                    # a constant density (no likelihood at all, or no prior term): power-scaling moves nothing
                    # (and Pareto smoothing of equal weights is undefined)
                    values[component] = _flatten(xr.zeros_like(ds.isel(chain=0, draw=0, drop=True)))
                    continue
                sens = azs.psense(tree, group=component, group_var_names=chosen)
                values[component] = _flatten(sens)
        frame = pd.DataFrame(values)
        frame.insert(0, "kind", "parameter" if kind == "posterior" else "estimand")
        frames.append(frame)
    table = pd.concat(frames) if frames else pd.DataFrame(columns=["kind", "prior", "likelihood"])
    table["diagnosis"] = [_label(p, lk, threshold) for p, lk in zip(table["prior"], table["likelihood"])]
    table.index.name = "quantity"
    return table


def _constant_total(ds: xr.Dataset) -> bool:
    if not ds.data_vars:
        return True
    total = sum(da.sum([d for d in da.dims if d not in SAMPLE_DIMS]) for da in ds.data_vars.values())
    values = np.asarray(total.values, dtype=float)
    return bool(np.all(values == values.flat[0]))


def _flatten(ds: xr.Dataset) -> pd.Series:
    out = {}
    for name, da in ds.data_vars.items():
        if da.ndim == 0:
            out[str(name)] = float(da)
            continue
        stacked = da.stack(_element=da.dims)
        for index, value in zip(stacked["_element"].values, stacked.values):
            index = index if isinstance(index, tuple) else (index,)
            out[f"{name}[{', '.join(str(i) for i in index)}]"] = float(value)
    return pd.Series(out, dtype=float)


def sensitivity_table(run, *, alternatives: dict | None = None,
                      threshold: float = PSENSE_THRESHOLD) -> pd.DataFrame:
    """:func:`prior_sensitivity` of ``run``, with every estimand's estimate under this run's prior set
    and under each alternative prior set side by side.

    Parameters
    ----------
    run : toolkit.inference.Run or toolkit.fitting.FitResult
    alternatives : dict, optional
        ``{prior set name: run}`` fitted to the same cohort with another prior set
        (e.g. ``{"skeptical": run_s, "optimistic": run_o}``).

    Returns
    -------
    DataFrame
        :func:`prior_sensitivity` rows, then one row (``kind`` = ``probability``) per posterior
        probability estimand (its sensitivity is that of the quantity it is a probability of, so
        ``prior``/``likelihood`` are NaN and ``diagnosis`` is empty). Columns ``estimate_<set>``:
        the posterior median of each estimand (the probability itself for a probability) under
        each prior set, NaN for parameters.
    """
    try:
        table = prior_sensitivity(run.posterior, threshold=threshold)
    except SensitivityUnavailable:
        from toolkit import __version__

        where = getattr(run, "path", None) or "this fit"
        raise SensitivityUnavailable(
            f"run {where} has no stored log prior (group '{LOG_PRIOR}') or log-likelihood, so its prior "
            f"sensitivity cannot be computed; refit it with toolkit >= {__version__} (`toolkit fit ... "
            "--overwrite`), which stores both") from None
    estimands = run.summary.get("estimands", {})
    probabilities = [k for k, v in estimands.items() if not isinstance(v, dict)]
    if probabilities:
        extra = pd.DataFrame({"kind": "probability", "prior": math.nan, "likelihood": math.nan, "diagnosis": ""},
                             index=pd.Index(probabilities, name="quantity"))
        table = pd.concat([table, extra])
    sets = {prior_set_name(run): run, **(alternatives or {})}
    for name, other in sets.items():
        other_est = other.summary.get("estimands", {})
        table[f"estimate_{name}"] = [
            _estimate(other_est.get(q)) if kind != "parameter" and q in estimands else math.nan
            for q, kind in zip(table.index, table["kind"])]
    return table


def _estimate(entry) -> float:
    if isinstance(entry, dict):
        return float(entry.get("median", math.nan))
    return math.nan if entry is None else float(entry)


def prior_set_name(run) -> str:
    """The named prior set a run was fitted with (``default`` for models without sets)."""
    return str((run.summary.get("options") or {}).get("prior", "default"))


PRIOR_SETS_BY_MODEL = {"durability": ("default", "skeptical", "optimistic"),
                       "mrd": ("default", "skeptical", "optimistic"), "cart": ("default",),
                       "joint": ("default",)}


def sensitivity_section(run, *, alternatives: dict | None = None) -> str:
    """HTML fragment: the power-scaling table of :func:`sensitivity_table`, flagged quantities first,
    and which prior sets exist for the model."""
    model = str(run.summary.get("model", "run"))
    title = html.escape(model)
    parts = [f'<section class="review-sensitivity"><h3>Prior sensitivity: {title}</h3>']
    try:
        table = sensitivity_table(run, alternatives=alternatives)
    except SensitivityUnavailable as err:
        parts.append(f"<p>{html.escape(str(err))}</p></section>")
        return "\n".join(parts)
    is_flagged = table["diagnosis"].isin([LABEL_CONFLICT, LABEL_PRIOR_DOMINATED])
    flagged = table[is_flagged]
    parts.append(
        "<p>Power-scaling sensitivity (Kallioinen et al. 2024): how much each quantity's posterior moves when the "
        "prior or the likelihood is raised to a power near 1. At 0.05 or more: both sensitive is a "
        "<b>prior-data conflict</b>, only the prior a <b>prior-dominated</b> quantity (the data say little). "
        f"{len(flagged)} of {len(table)} quantities flagged.</p>")
    if not run.summary.get("diagnostics", {}).get("converged", False):
        parts.append('<p class="bad">The fit failed its sampling diagnostics: these sensitivities are '
                     "provisional.</p>")
    sets = PRIOR_SETS_BY_MODEL.get(model, ("default",))
    if len(sets) == 1:
        parts.append(f"<p>The {title} model has one prior set (default); there are no skeptical or optimistic "
                     "sets to compare.</p>")
    elif not alternatives:
        parts.append(f"<p>Prior sets of this model: {', '.join(sets)}; fit the others "
                     "(<code>--prior</code>) and pass them to see their estimands side by side.</p>")
    ordered = pd.concat([flagged, table[~is_flagged]])
    parts.append(_table_html(ordered))
    parts.append("</section>")
    return "\n".join(parts)


# --------------------------------------------------------------------------- fit-time storage


@contextlib.contextmanager
def recording_estimand_draws():
    """Collect the draws behind each summarised estimand while estimands are computed.

    Yields a dict filled by :func:`toolkit.estimands.summarize_draws`; pass it with the
    estimands to :func:`estimand_draws_dataset`.
    """
    from toolkit.estimands import _DRAW_RECORDER

    record: dict = {}
    token = _DRAW_RECORDER.set(record)
    try:
        yield record
    finally:
        _DRAW_RECORDER.reset(token)


def estimand_draws_dataset(estimands: dict, record: dict, posterior: xr.DataTree) -> xr.Dataset:
    """The draws of each scalar estimand with one draw per posterior draw, as ``(chain, draw)`` arrays.

    Estimands from simulated new patients or thinned draws (another length) are left out:
    importance weights exist only per posterior draw.
    """
    sizes = posterior["posterior"].sizes
    n_chain, n_draw = int(sizes["chain"]), int(sizes["draw"])
    data = {}
    for name, entry in estimands.items():
        found = record.get(id(entry))
        if found is None or found[0] is not entry:
            continue
        draws = found[1]
        if draws.size == n_chain * n_draw:
            data[name] = (("chain", "draw"), draws.reshape(n_chain, n_draw))
    return xr.Dataset(data, coords={"chain": posterior["posterior"]["chain"].values,
                                    "draw": posterior["posterior"]["draw"].values})


def add_log_prior(posterior: xr.DataTree, model) -> xr.DataTree:
    """Add group ``log_prior``: each free variable's log prior density per draw, summed over its elements.

    Per-element values of per-patient vectors would multiply the file size for no use
    (power-scaling sums them); a variable with a patient-level dimension is stored as
    ``patient::<name>`` so :func:`prior_sensitivity` can leave it out of the power-scaled prior.
    """
    import pymc as pm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lp = pm.compute_log_prior(posterior, model=model, extend_inferencedata=False, progressbar=False)
    ds = lp[LOG_PRIOR].to_dataset() if isinstance(lp, xr.DataTree) else lp
    post = posterior["posterior"].to_dataset()
    out = {}
    for name, da in ds.data_vars.items():
        extra = [d for d in da.dims if d not in SAMPLE_DIMS]
        level = parameter_level(post[name]) if name in post else ("patient" if extra else "population")
        key = f"patient::{name}" if level == "patient" else str(name)
        out[key] = da.sum(extra) if extra else da
    posterior[LOG_PRIOR] = xr.DataTree(xr.Dataset(out))
    return posterior


def add_log_likelihood(posterior: xr.DataTree, model, *, pointwise: bool) -> xr.DataTree:
    """Add group ``log_likelihood`` to a fit sampled without it.

    ``pointwise=False`` keeps each observed variable's log-likelihood summed over its
    observations (one number per draw: what power-scaling needs, a few kB); ``True`` keeps
    every observation (what PSIS-LOO needs; for the joint model about 8 bytes x draws x
    CAR-T samples, tens of MB at the default 4 x 1000 draws).
    """
    import pymc as pm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ll = pm.compute_log_likelihood(posterior, model=model, extend_inferencedata=False, progressbar=False)
    ds = ll["log_likelihood"].to_dataset() if isinstance(ll, xr.DataTree) else ll
    if not pointwise:
        ds = xr.Dataset({name: da.sum([d for d in da.dims if d not in SAMPLE_DIMS])
                         for name, da in ds.data_vars.items()})
    posterior["log_likelihood"] = xr.DataTree(ds)
    return posterior


# --------------------------------------------------------------------------- report hook


def prior_set_alternatives(run, runs: list) -> dict:
    """``{prior set name: run}`` of the other runs of ``run``'s model on the same cohort with another prior set."""
    model, data_hash, own = run.summary.get("model"), run.provenance.get("data_hash"), prior_set_name(run)
    return {prior_set_name(o): o for o in runs
            if o is not run and o.summary.get("model") == model
            and o.provenance.get("data_hash") == data_hash and prior_set_name(o) != own}


def report_fragments(runs: list) -> dict[str, str]:
    """The report's reviewer sections as HTML: ``sensitivity`` (each run's prior-sensitivity section, with
    the runs of the same model and cohort fitted with other prior sets beside it) and ``appendix`` (each
    run's diagnostics appendix). ``report.html.j2``'s appendix template places them."""
    return {"sensitivity": "\n".join(sensitivity_section(run, alternatives=prior_set_alternatives(run, runs))
                                      for run in runs),
            "appendix": "\n".join(diagnostics_appendix(run) for run in runs)}
