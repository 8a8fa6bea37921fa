"""Shared behaviour of the prior sets that are Normal(mu, sigma) pairs (durability, joint)."""

from __future__ import annotations

from dataclasses import asdict, replace

import pymc as pm


class NormalPairPriors:
    """Mixin for frozen dataclasses whose fields are (mu, sigma) pairs."""

    def with_overrides(self, overrides: dict[str, list[float]]):
        """A copy with some pairs replaced (``{"name": [mu, sigma]}``); unknown names raise ValueError."""
        valid = set(asdict(self))
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise ValueError(f"unknown prior(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
        return replace(self, **{k: (float(v[0]), float(v[1])) for k, v in overrides.items()})

    def as_dict(self) -> dict[str, list[float]]:
        return {k: list(v) for k, v in asdict(self).items()}


def normal(name: str, prior: tuple[float, float], **kwargs):
    """``pm.Normal(name, mu, sigma)`` from a (mu, sigma) prior pair (inside a model context)."""
    return pm.Normal(name, mu=prior[0], sigma=prior[1], **kwargs)
