"""``summary.json`` in Python: the estimands as a table, and the mapping that gives it when called.

A leaf module (numpy and pandas only), so that the run folder code
(:mod:`toolkit.inference`), the fits (:mod:`toolkit.fitting`) and the analysis
plan all read a summary the same way without importing one another.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

ESTIMAND_COLUMNS = ["estimand", "median", "mean", "sd", "lo", "hi", "level", "probability"]
_INTERVAL_KEY = re.compile(r"^hdi_(\d+)$")


def estimands_frame(summary: dict) -> pd.DataFrame:
    """The ``estimands`` of a ``summary.json`` as a tidy numeric table, one row per estimand.

    An interval estimand ``{mean, median, sd, hdi_90: [lo, hi]}`` fills ``median``, ``mean``,
    ``sd``, ``lo``, ``hi`` and ``level`` (0.90 for ``hdi_90``); a probability fills
    ``probability``. Missing values are NaN, so every column but ``estimand`` is float.
    """
    rows = []
    for name, value in summary.get("estimands", {}).items():
        row = dict.fromkeys(ESTIMAND_COLUMNS[1:], np.nan) | {"estimand": name}
        if isinstance(value, dict):
            for key in ("median", "mean", "sd"):
                row[key] = _float(value.get(key))
            for key, bounds in value.items():
                match = _INTERVAL_KEY.match(key)
                if match and isinstance(bounds, (list, tuple)) and len(bounds) == 2:
                    row["lo"], row["hi"] = _float(bounds[0]), _float(bounds[1])
                    row["level"] = int(match.group(1)) / 100
        else:
            row["probability"] = _float(value)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=ESTIMAND_COLUMNS)
    return frame.astype({c: float for c in ESTIMAND_COLUMNS[1:]})


def _float(value) -> float:
    try:
        return float(value) if value is not None else np.nan
    except (TypeError, ValueError):
        return np.nan


class Summary(dict):
    """``summary.json`` as a mapping that, called, gives the estimands table (:func:`estimands_frame`)."""

    def __call__(self) -> pd.DataFrame:
        return estimands_frame(self).set_index("estimand")
