"""Cell parsers: text as written -> number, or below-limit value + limit.

Every parser returns ``None`` for text it cannot read, so the validator can
name the cell; nothing is guessed.
"""

from __future__ import annotations

import math
import re

from toolkit.data.schema import CART_BLQ_TOKENS, MRD_NEGATIVE_TOKENS, MRD_PNQ_TOKENS

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_LESS_THAN = re.compile(r"^<\s*(?P<x>[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?)$")

BLANK = float("nan")


def parse_number(text: str) -> float | None:
    """``"1.5e7"`` -> 1.5e7; blank -> NaN; anything else -> None."""
    if text == "":
        return BLANK
    if not _NUMBER.match(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def parse_less_than(text: str) -> float | None:
    """``"<50"`` -> 50.0; anything else -> None."""
    match = _LESS_THAN.match(text)
    return float(match.group("x")) if match else None


def parse_cart_value(text: str) -> tuple[float, bool, float] | None:
    """Parse a CAR-T level cell.

    Returns ``(value, below_lloq, own_limit)``: ``value`` is NaN when below
    the LLOQ, ``own_limit`` is the ``x`` of ``<x`` (NaN otherwise).
    """
    if text.lower() in CART_BLQ_TOKENS:
        return BLANK, True, BLANK
    limit = parse_less_than(text)
    if limit is not None:
        return BLANK, True, limit
    value = parse_number(text)
    if value is None or value < 0:
        return None
    return value, False, BLANK


def parse_mrd_value(text: str) -> tuple[float, str, float] | None:
    """Parse an MRD cell.

    Returns ``(mrd_pct, censoring, own_limit)`` where ``censoring`` is
    ``"none"`` (quantified), ``"below_lod"`` (blank, negative, 0, ``<x``) or
    ``"pnq"`` (positive, not quantifiable).
    """
    lowered = text.lower()
    if lowered in MRD_NEGATIVE_TOKENS:
        return BLANK, "below_lod", BLANK
    if lowered in MRD_PNQ_TOKENS:
        return BLANK, "pnq", BLANK
    limit = parse_less_than(text)
    if limit is not None:
        return BLANK, "below_lod", limit
    value = parse_number(text)
    if value is None or value < 0:
        return None
    if value == 0:
        return BLANK, "below_lod", BLANK
    return value, "none", BLANK
