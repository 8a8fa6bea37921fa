"""The CAR-T assay units the toolkit knows, each with the prior centre of the typical peak level.

The CAR-T kinetic model's level parameter (log Cmax) lives on the scale of the cohort's unit, so its
prior must too: a flow cohort in cells/uL fitted against a qPCR prior centred at 24,000 copies/ug would
start about 7 log units off. Every other kinetic parameter (Tmax in days, fold expansion, rates per day,
the persistent fraction) is a shape of the curve and does not depend on the unit.

Mixed units within one cohort are refused (``toolkit.data.validate``): no conversion between assays is
documented. qPCR copies per ug genomic DNA and flow CAR+ cells per uL of blood measure different things,
and copies per mL of blood depend on the DNA yield per mL, which lymphodepletion changes.

To add a unit: append a :class:`CartUnit` to ``CART_UNITS`` with its spellings, the assay, the prior
(mean, SD) of log Cmax in that unit and the published source of that centre, then run
``toolkit templates --out data_templates``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class CartUnit:
    """One unit of ``cart_kinetics.csv`` ``unit``: canonical ``name``, accepted ``spellings`` (lower case),
    the ``assay``, and the Normal (mean, SD) prior of log typical Cmax in this unit with its ``source``."""

    name: str
    spellings: tuple[str, ...]
    assay: str
    meaning: str
    log_cmax_prior: tuple[float, float]
    source: str


CART_UNITS: tuple[CartUnit, ...] = (
    CartUnit(
        name="copies/ug",
        spellings=("copies/ug", "copies/µg", "copies/μg", "copies/ug gdna", "copies/µg gdna", "copies/μg gdna",
                   "copies/ug dna", "copies/µg dna"),
        assay="qPCR",
        meaning="transgene copies per microgram of genomic DNA",
        log_cmax_prior=(math.log(24_000.0), 0.5),
        source="Stein AM et al. CPT Pharmacometrics Syst Pharmacol 2019;8:285, Table 1: typical Cmax 24,000 "
               "copies/ug (RSE 20 %), tisagenlecleucel in r/r B-ALL; SD 0.5 widened for another product and "
               "population",
    ),
    CartUnit(
        name="cells/uL",
        spellings=("cells/ul", "cells/µl", "cells/μl", "car+ cells/ul", "car+ cells/µl", "cells/mm3"),
        assay="flow cytometry",
        meaning="CAR-positive cells per microlitre of blood",
        log_cmax_prior=(math.log(30.0), 1.0),
        source="Kimmel GJ, Locke FL, Altrock PM. Proc R Soc B 2021;288:20210229: axicabtagene ciloleucel "
               "blood counts of about 27.5 CAR+ cells/uL at day 7, near the peak (large B-cell lymphoma); "
               "another product and disease, so SD 1.0 (95 % 4-210 cells/uL)",
    ),
)

_BY_SPELLING = {s: u for u in CART_UNITS for s in (u.name.lower(), *u.spellings)}


def find_cart_unit(text) -> CartUnit | None:
    """The known unit spelled ``text`` (case and surrounding spaces ignored), or None."""
    if text is None:
        return None
    return _BY_SPELLING.get(" ".join(str(text).split()).lower())


def supported_units_text() -> str:
    """The supported units in words, for messages and the data dictionary."""
    return "; ".join(f"{u.name} ({u.assay}, {u.meaning})" for u in CART_UNITS)


def unknown_unit_fix() -> str:
    """What to do about a unit the toolkit does not know."""
    return (f"write one of the supported units: {supported_units_text()}; units cannot be mixed or converted "
            "between assays. A new unit needs its own prior centre: add it to toolkit/data/units.py with its source")
