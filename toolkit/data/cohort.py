"""The validated cohort: study metadata plus typed tables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from toolkit.data.schema import PATIENTS
from toolkit.data.validate import validate_folder


@dataclass
class Cohort:
    """A validated cohort folder.

    Tables are indexed by spreadsheet row number and hold parsed values:
    ``cart`` has ``value`` (NaN when below the LLOQ), ``below_lloq`` and
    ``lloq_used`` (the limit that censors the row); ``mrd`` has ``mrd_pct``,
    ``censoring`` (``none``, ``below_lod``, ``pnq``), ``lod_used`` and
    ``loq_pct``. Blank event days are NaN ("did not happen").
    """

    path: Path
    study: dict
    patients: pd.DataFrame
    outcomes: pd.DataFrame
    cart: pd.DataFrame | None = None
    mrd: pd.DataFrame | None = None

    @property
    def name(self) -> str:
        return str(self.study.get("name", self.path.name))

    @property
    def control_arm(self) -> str:
        return self.study["control_arm"]

    @property
    def experimental_arm(self) -> str:
        return self.study["experimental_arm"]

    @property
    def arms(self) -> tuple[str, str]:
        return self.control_arm, self.experimental_arm

    def is_experimental(self) -> pd.Series:
        """1 for the experimental arm, 0 for control, indexed by patient_id."""
        return (self.patients.set_index("patient_id")["arm"] == self.experimental_arm).astype(int)

    @property
    def covariate_columns(self) -> list[str]:
        """Numeric baseline columns available as covariates."""
        return [c for c in self.patients.columns if c not in ("patient_id", "arm", "sex")]

    @classmethod
    def from_frames(cls, *, patients: pd.DataFrame, outcomes: pd.DataFrame, study: dict,
                    cart: pd.DataFrame | None = None, mrd: pd.DataFrame | None = None) -> "Cohort":
        """A validated cohort from DataFrames, checked exactly as a folder is (:func:`load_cohort`).

        The tables are written as the CSV files of a cohort folder (``patients.csv``, ``outcomes.csv``,
        ``cart_kinetics.csv``, ``mrd.csv``, ``study.toml``) in a new private temporary folder, which is
        then loaded, so the same validation runs and its problems name the same files; frame row ``i``
        is spreadsheet row ``i + 2`` (after the header). The folder stays, as the cohort's ``path``:
        a fit's provenance hashes it.
        """
        import tempfile

        from toolkit.data.io import write_study

        folder = Path(tempfile.mkdtemp(prefix="toolkit-cohort-"))
        for name, frame in (("patients", patients), ("outcomes", outcomes), ("cart_kinetics", cart), ("mrd", mrd)):
            if frame is not None:
                frame.to_csv(folder / f"{name}.csv", index=False)
        write_study(folder, study)
        return load_cohort(folder)

    def merged(self) -> pd.DataFrame:
        """patients joined with outcomes, one row a patient."""
        return self.patients.merge(self.outcomes, on="patient_id", how="left", validate="one_to_one")


def load_cohort(path: str | Path) -> Cohort:
    """Read and validate a cohort folder.

    Raises ``CohortValidationError`` listing every problem (file, row,
    column, value, fix). Nothing in the folder is written or changed.
    """
    path = Path(path)
    study, tables = validate_folder(path)
    patients = tables["patients"].copy()
    for column in PATIENTS.column_names:
        if column not in patients.columns and column != "patient_id":
            patients[column] = np.nan if column != "sex" else ""
    return Cohort(path=path, study=study, patients=patients, outcomes=tables["outcomes"],
                  cart=tables.get("cart_kinetics"), mrd=tables.get("mrd"))
