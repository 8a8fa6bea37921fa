"""Plain-language sentences generated from results, for notebooks and the report.

The report renders the same sentences as HTML (``toolkit.report``); here they
are plain text. Nothing in a conclusion is typed by hand.
"""

from __future__ import annotations

import html
import re


def plain(sentence: str) -> str:
    """HTML sentence -> plain text."""
    return html.unescape(re.sub(r"<[^>]+>", "", sentence))


def cohort_in_words(cohort, tables: dict) -> str:
    """One paragraph describing the cohort from ``describe_cohort`` tables."""
    arms = tables["arms"].set_index("arm")
    parts = [f"{cohort.name}: {int(arms['patients'].sum())} patients "
             f"({', '.join(f'{int(r.patients)} {a}' for a, r in arms.iterrows())})."]
    for arm, r in arms.iterrows():
        parts.append(f"{arm}: {int(r['CR/CRi'])} of {int(r.patients)} reached remission "
                     f"({r['response rate']:.0%}), {int(r.relapses)} relapsed "
                     f"({int(r['CD19-negative relapses'])} CD19-negative), {int(r.deaths)} died; "
                     f"median follow-up {r['median follow-up (days)']:.0f} days.")
    return " ".join(parts)


def durability_in_words(summary: dict) -> str:
    """The durability answer as plain text (the same sentences as the report)."""
    from toolkit.report import durability_answer

    status = "" if summary["diagnostics"]["converged"] else "PROVISIONAL (the fit failed its diagnostics): "
    return status + " ".join(plain(s) for s in durability_answer(summary))


def cart_in_words(summary: dict) -> str:
    """The CAR-T kinetics answer as plain text (the same sentences as the report)."""
    from toolkit.report_cart import cart_answer

    status = "" if summary["diagnostics"]["converged"] else "PROVISIONAL (the fit failed its diagnostics): "
    return status + " ".join(plain(s) for s in cart_answer(summary))


def joint_in_words(summary: dict, predictions=None, *, landmark_day: float | None = None) -> str:
    """The joint-model answer as plain text (the same sentences as the report), plus, given a
    ``toolkit.prediction.predict_relapse`` table, one sentence on the dynamic predictions."""
    from toolkit.report_joint import joint_answer

    status = "" if summary["diagnostics"]["converged"] else "PROVISIONAL (the fit failed its diagnostics): "
    text = status + " ".join(plain(s) for s in joint_answer(summary))
    if predictions is not None and len(predictions):
        key = next(c for c in predictions.columns if c.startswith("p_relapse_by_") and c.endswith("d"))
        horizon = key.removeprefix("p_relapse_by_").removesuffix("d")
        p = predictions[key]
        top = predictions.loc[p.idxmax()]
        when = f"at day {landmark_day:g}" if landmark_day is not None else "at the landmark"
        text += (f" Dynamic prediction: of {len(predictions)} patients in remission {when}, the predicted risk of "
                 f"relapse by day {horizon} ranges from {p.min():.0%} to {p.max():.0%} (median {p.median():.0%}); "
                 f"the highest is {top[key]:.0%} (90% interval {top[key + '_lo']:.0%} to {top[key + '_hi']:.0%}).")
    return text


def estimands_table(summary: dict):
    """The estimands of a summary as a table: median and 90% interval, or the probability."""
    import pandas as pd

    rows = []
    for name, value in summary["estimands"].items():
        if isinstance(value, dict):
            lo, hi = next(v for k, v in value.items() if k.startswith("hdi_"))
            rows.append({"estimand": name, "median": f"{value['median']:.3g}", "90% interval": f"{lo:.3g} to {hi:.3g}"})
        else:
            rows.append({"estimand": name, "median": f"{value:.3f}", "90% interval": "(probability)"})
    return pd.DataFrame(rows)
