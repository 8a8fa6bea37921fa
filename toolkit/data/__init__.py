"""Cohort data: schemas, reading, validation and description.

``load_cohort(path)`` is the entry point; it returns a validated ``Cohort``
or raises ``CohortValidationError`` with every problem found.
"""

from toolkit.data.cohort import Cohort, load_cohort
from toolkit.data.problems import CohortValidationError, Problem
from toolkit.data.schema import TABLES

__all__ = ["Cohort", "CohortValidationError", "Problem", "TABLES", "load_cohort"]
