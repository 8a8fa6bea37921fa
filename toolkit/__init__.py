"""Bayesian toolkit for patient response to CAR-T therapy.

Data flow: cohort folder -> ``toolkit.data`` (validated ``Cohort``) ->
model inputs -> ``toolkit.models`` (PyMC models) -> ``toolkit.inference``
(posterior + diagnostics) -> ``toolkit.estimands`` -> report.
"""

__version__ = "0.1.0"
