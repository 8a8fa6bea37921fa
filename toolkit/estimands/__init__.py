"""Decision quantities of every analysis, one module per analysis.

- :mod:`toolkit.estimands.core`: posterior summaries shared by all (median, HDI, P(effect)).
- :mod:`toolkit.estimands.durability`: remission durability (cure model).
- :mod:`toolkit.estimands.cart`: CAR-T kinetics.
- :mod:`toolkit.estimands.mrd`: MRD kinetics (also importable as ``toolkit.mrd_estimands``).
- :mod:`toolkit.estimands.joint`: the joint kinetics-relapse model (also ``toolkit.joint_estimands``).

The names that ``toolkit.estimands`` had as a single module (the generic pieces, the
durability and the CAR-T estimands) are importable from here as before. The MRD and
joint modules are not imported here: they load their PyMC models at import.
"""

from __future__ import annotations

from toolkit.estimands.cart import (  # noqa: F401
    CART_ARM_QUANTITIES,
    cart_estimands,
    cart_patient_estimands,
)
from toolkit.estimands.core import (  # noqa: F401
    _DRAW_RECORDER,
    _flat_draws,
    finite_draws,
    hdi_key,
    posterior_probability,
    summarize_draws,
)
from toolkit.estimands.durability import (  # noqa: F401
    _threshold_name,
    durability_definitions,
    durability_estimands,
)

__all__ = ["finite_draws", "hdi_key", "posterior_probability", "summarize_draws"]
