r"""Calibration metrics from stored SBC results: uniformity tests, ECDF bands, coverage, contraction.

Uniformity (per quantity). Under calibration the randomized PIT values u_1..u_N
(see ``toolkit.calibration.runner``) are i.i.d. U(0, 1). Two tests:

- **ECDF test** (Säilynoja, Bürkner & Vehtari 2022, Statistics and Computing
  32:32): at K evaluation points z_k = k/K the count N F_N(z_k) is
  Binomial(N, z_k); the statistic is

  .. math:: \gamma = \min_k 2 \min\{B(N F_N(z_k); N, z_k),\; 1 - B(N F_N(z_k) - 1; N, z_k)\}

  (B the binomial CDF), and its null distribution is simulated. The p-value is
  P(Gamma <= gamma) under uniformity; the simultaneous (1 - alpha) band is the
  binomial interval at level gamma*_alpha (the alpha-quantile of Gamma) at every z_k,
  which the whole ECDF stays inside with probability 1 - alpha.
- **chi-square** on B equal-width bins of u (B = min(20, max(4, N // 5))).

A quantity's p-value is the Bonferroni combination of the two,
p = min(1, 2 min(p_ecdf, p_chi2)). Verdict: ``fails`` when p < alpha / m (m =
number of quantities, Bonferroni over the study), ``suspect`` when p < alpha
only, else ``calibrated``; the study passes when no quantity fails.

Coverage of the central q interval: the share of simulations with
|u - 1/2| <= q/2, with Monte Carlo standard error sqrt(c (1 - c) / N).

Contraction: mean posterior SD over simulations divided by the SD of the prior
values across simulations (the prior SD of that quantity); near 1 the quantity
is learned mostly from the prior at this design, near 0 from the data.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["COVERAGE_LEVELS", "chi2_pvalue", "ecdf_band", "ecdf_pvalue", "gamma_statistic", "summarize_study"]

COVERAGE_LEVELS = (0.5, 0.8, 0.9, 0.95)
ALPHA = 0.05
#: null simulations for the ECDF test (fixed seed, so verdicts are reproducible)
N_NULL = 4000


def _eval_points(n: int, k: int | None) -> np.ndarray:
    k = int(k or min(n, 100))
    return np.arange(1, k) / k


def gamma_statistic(u, k: int | None = None) -> float:
    """Säilynoja et al.'s gamma: smallest two-sided binomial tail probability of the ECDF over z_k."""
    from scipy.stats import binom

    u = np.sort(np.asarray(u, float))
    n = u.size
    z = _eval_points(n, k)
    counts = np.searchsorted(u, z, side="right")
    return float(np.min(2 * np.minimum(binom.cdf(counts, n, z), binom.sf(counts - 1, n, z))))


@lru_cache(maxsize=64)
def _null_gammas(n: int, k: int | None) -> np.ndarray:
    from scipy.stats import binom

    rng = np.random.default_rng(20221101)
    z = _eval_points(n, k)
    u = np.sort(rng.uniform(size=(N_NULL, n)), axis=1)
    counts = np.stack([np.searchsorted(row, z, side="right") for row in u])
    return np.sort(np.min(2 * np.minimum(binom.cdf(counts, n, z), binom.sf(counts - 1, n, z)), axis=1))


def ecdf_pvalue(u, k: int | None = None) -> float:
    """P(Gamma <= gamma(u)) for N uniform values: small when the ECDF leaves the band somewhere."""
    u = np.asarray(u, float)
    null = _null_gammas(u.size, k)
    return float((np.searchsorted(null, gamma_statistic(u, k), side="right") + 1) / (null.size + 1))


def ecdf_band(n: int, *, alpha: float = ALPHA, k: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Simultaneous (1 - alpha) band of the ECDF of n uniforms: (z, lower, upper), as ECDF values."""
    from scipy.stats import binom

    z = _eval_points(n, k)
    g = float(np.quantile(_null_gammas(n, k), alpha))
    return z, binom.ppf(g / 2, n, z) / n, binom.ppf(1 - g / 2, n, z) / n


def chi2_pvalue(u, bins: int | None = None) -> float:
    """Chi-square test of equal counts in ``bins`` equal-width bins of u."""
    from scipy.stats import chisquare

    u = np.asarray(u, float)
    bins = int(bins or min(20, max(4, u.size // 5)))
    counts = np.histogram(u, bins=bins, range=(0.0, 1.0))[0]
    return float(chisquare(counts).pvalue)


def learned_from(contraction: float) -> str:
    """Words for a contraction value (posterior SD / prior SD)."""
    if not np.isfinite(contraction):
        return "unknown"
    if contraction <= 0.5:
        return "the data"
    if contraction <= 0.8:
        return "data and prior"
    return "mostly the prior"


def summarize_study(results, *, alpha: float = ALPHA, converged_only: bool = False):
    """One row per quantity: tests, verdict, coverage with MC error, contraction, and ``p_oracle``: the ECDF
    test of the fit-free oracle's PITs where the problem has one (``oracle_pits``; NaN otherwise), small when
    the study's prior draws alone depart from uniformity.

    Parameters
    ----------
    results : DataFrame from ``toolkit.calibration.runner.load_results``
    converged_only : use only simulations whose fit passed its diagnostics (biases SBC;
        for comparison only; the default keeps every successful simulation)

    Returns
    -------
    (table, overview) : pandas DataFrame indexed by quantity, and a dict with the
        study-level counts (simulations, failed, not converged and their share) and ``passed``.
    """
    import pandas as pd

    sims = results.groupby("sim").first()
    ok = results[(results["status"] == "ok") & (results["quantity"] != "")]
    if converged_only:
        ok = ok[ok["converged"].astype(bool)]
    n_ok = int((sims["status"] == "ok").sum())
    unconverged_rows = (sims["status"] == "ok") & ~sims["converged"].astype(bool)
    unconverged = int(unconverged_rows.sum())
    recorded = sims["population_converged"] if "population_converged" in sims else pd.Series(None, index=sims.index,
                                                                                               dtype=object)
    quantities = list(dict.fromkeys(ok["quantity"]))
    m = max(len(quantities), 1)
    rows = []
    for q in quantities:
        part = ok[ok["quantity"] == q]
        u = part["pit"].to_numpy(float)
        n = u.size
        row = {"quantity": q, "kind": part["kind"].iloc[0], "n": n}
        if n >= 2:
            p_ecdf, p_chi2 = ecdf_pvalue(u), chi2_pvalue(u)
        else:
            p_ecdf = p_chi2 = np.nan
        p = min(1.0, 2 * min(p_ecdf, p_chi2)) if n >= 2 else np.nan
        # the same test of the fit-free oracle's PITs (problems with ``oracle_pits``; studies since December
        # 2026): small when the prior draws themselves fell unusually, whatever the fits did
        oracle = part["oracle_pit"].to_numpy(float) if "oracle_pit" in part else np.array([])
        oracle = oracle[np.isfinite(oracle)]
        p_oracle = ecdf_pvalue(oracle) if oracle.size >= 2 else np.nan
        row.update(p_ecdf=p_ecdf, p_chi2=p_chi2, p_value=p,
                   verdict="too few" if n < 2 else "fails" if p < alpha / m else "suspect" if p < alpha
                   else "calibrated")
        for level in COVERAGE_LEVELS:
            c = float(np.mean(np.abs(u - 0.5) <= level / 2)) if n else np.nan
            row[f"coverage_{int(level * 100)}"] = c
            row[f"coverage_{int(level * 100)}_se"] = float(np.sqrt(c * (1 - c) / n)) if n else np.nan
        prior = part["prior_value"].to_numpy(float)
        prior = prior[np.isfinite(prior)]
        prior_sd = float(np.std(prior, ddof=1)) if prior.size > 1 else np.nan
        post_sd = float(np.nanmean(part["post_sd"].to_numpy(float)))
        row["prior_sd"] = prior_sd
        row["mean_posterior_sd"] = post_sd
        row["contraction"] = post_sd / prior_sd if prior_sd and np.isfinite(prior_sd) and prior_sd > 0 else np.nan
        row["learned_from"] = learned_from(row["contraction"])
        row["p_oracle"] = p_oracle
        rows.append(row)
    table = pd.DataFrame(rows).set_index("quantity") if rows else pd.DataFrame()
    overview = {
        "simulations": int(len(sims)), "succeeded": n_ok, "failed": int(len(sims) - n_ok),
        "not_converged": unconverged, "share_not_converged": unconverged / n_ok if n_ok else np.nan,
        "divergent_simulations": int((sims.get("divergences", pd.Series(dtype=float)) > 0).sum()),
        # fits rerun with more draws after a failed first run (extend_sampling; 0 in studies without reruns)
        "extended": int(((sims["status"] == "ok") & (sims.get("runs", pd.Series(1, index=sims.index)) > 1)).sum()),
        # unconverged fits whose population-level quantities all passed R-hat and ESS, of those that record it
        # (``population_converged``, simulations run since December 2026)
        "unconverged_population_passed": int((unconverged_rows & recorded.eq(True)).sum()),
        "unconverged_population_recorded": int((unconverged_rows & recorded.notna()).sum()),
        "alpha": alpha, "bonferroni_threshold": alpha / m,
        "failing": [q for q in quantities if table.loc[q, "verdict"] == "fails"] if rows else [],
        "suspect": [q for q in quantities if table.loc[q, "verdict"] == "suspect"] if rows else [],
        "errors": sims.loc[sims["status"] != "ok", "error"].astype(str).value_counts().to_dict(),
    }
    # a study with failed simulations is inconclusive until they are understood (their ranks are missing)
    overview["passed"] = bool(rows) and not overview["failing"] and not overview["failed"]
    return table, overview


def unconverged_by_prior(results, *, top: float = 0.15, parameters_only: bool = True):
    r"""Where in the prior the fits that fail their verdict lie: per ranked parameter, the share of unconverged
    simulations among the prior draws in its upper ``top`` tail against the rest, with Fisher's exact test.

    A parameter whose upper tail holds most failures (small p) names the region of the prior where the
    sampler struggles (e.g. a large between-patient SD), which a reparameterisation or a better-sourced prior
    must address; failures spread evenly over the prior point elsewhere. Returns a DataFrame sorted by p.
    """
    import pandas as pd
    from scipy.stats import fisher_exact

    ok = results[(results["status"] == "ok") & (results["quantity"] != "")]
    if parameters_only and "kind" in ok:
        ok = ok[ok["kind"] == "parameter"]
    values = ok.pivot_table(index="sim", columns="quantity", values="prior_value")
    bad = ~ok.groupby("sim")["converged"].first().astype(bool).reindex(values.index)
    rows = []
    for name in values.columns:
        x = values[name]
        cut = float(x.quantile(1 - top))
        upper = x > cut
        table = [[int((bad & upper).sum()), int((~bad & upper).sum())],
                 [int((bad & ~upper).sum()), int((~bad & ~upper).sum())]]
        rows.append({"parameter": name, "upper_tail_above": cut, "unconverged_upper": table[0][0],
                     "simulations_upper": int(upper.sum()), "unconverged_rest": table[1][0],
                     "simulations_rest": int((~upper).sum()), "p_fisher": float(fisher_exact(table)[1])})
    return pd.DataFrame(rows).sort_values("p_fisher").reset_index(drop=True)


def unconverged_fits(results, *, top: int = 3):
    r"""The fits that failed their verdict, one row each: runs, divergences, R-hat, ESS, and where the kept run's
    divergent draws sit (the ``top`` parameters by \|divergent z\|, ``toolkit.calibration.runner.divergent_z``;
    empty for a run without divergences or for a study stored before it was recorded). Sorted by simulation.
    """
    import pandas as pd

    ok = results[results["status"] == "ok"]
    bad = ok[~ok["converged"].astype(bool)]
    rows = []
    for sim, part in bad.groupby("sim"):
        first = part.iloc[0]
        z = part.set_index("quantity")["divergent_z"].dropna() if "divergent_z" in part else pd.Series(dtype=float)
        z = z.reindex(z.abs().sort_values(ascending=False).index)[:top]
        rows.append({"sim": int(sim), "runs": int(first.get("runs", 1)), "divergences": int(first["divergences"]),
                     "max_rhat": float(first["max_rhat"]), "min_ess_bulk": float(first["min_ess_bulk"]),
                     "min_ess_tail": float(first["min_ess_tail"]),
                     "divergent_at": ", ".join(f"{q} {v:+.2f}" for q, v in z.items())})
    return pd.DataFrame(rows, columns=["sim", "runs", "divergences", "max_rhat", "min_ess_bulk", "min_ess_tail",
                                       "divergent_at"])
