"""The cohort tables, each described once.

These descriptions drive validation (``toolkit.data.validate``), the empty
template files and the data dictionary (``data_templates/DATA_DICTIONARY.md``),
so the three can never disagree.

Time is always **days since CAR-T infusion** (day 0). No calendar dates and
no direct identifiers are needed or accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from toolkit.data.units import supported_units_text

#: Column kinds and what a cell of that kind may hold.
KINDS = {
    "id": "pseudonymous code, text without spaces",
    "category": "one of the allowed values (case-insensitive)",
    "number": "a number",
    "day": "whole or fractional days since CAR-T infusion, 0 or more",
    "cart_value": "a number, or below the LLOQ written as blank, BLQ or <x",
    "mrd_value": "a number, or below the detection limit written as blank, negative, 0 or <x; "
    "PNQ for positive but not quantifiable",
}

RESPONSES = ("CR", "CRi", "NR")
CD19_STATUS = ("positive", "negative", "unknown")
MRD_METHODS = ("flow", "ngs", "qpcr")
SPECIMENS = ("BM", "PB")
SEXES = ("F", "M")

#: Plausibility bounds, so a typo or an export artefact (a follow-up of 1e308
#: days, a date typed as 20240301) is named instead of reaching a model. A day
#: is at most 20 years after the infusion (7305 days; the first CAR-T trials
#: in B-ALL began in 2010). A level or a dose above 1e9 is above any assay's
#: range (CAR-T transgene levels peak near 1e5-1e6 copies/ug; approved doses
#: are 1e5-1e7 cells/kg).
MAX_DAY = 7305.0
MAX_LEVEL = 1e9
MAX_DOSE_PER_KG = 1e9


@dataclass(frozen=True)
class ColumnSpec:
    """One column of a cohort table.

    ``required`` means the column must be present; ``blank`` says what an
    empty cell means, or ``None`` when a blank cell is an error.
    """

    name: str
    kind: str
    description: str
    unit: str = ""
    required: bool = True
    blank: str | None = None
    allowed: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    example: str = ""


@dataclass(frozen=True)
class TableSpec:
    """One file of a cohort folder (``<name>.csv`` or ``<name>.xlsx``)."""

    name: str
    description: str
    columns: tuple[ColumnSpec, ...]
    required: bool = True
    extra_numeric_columns: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


PATIENT_ID = ColumnSpec(
    "patient_id", "id", "Pseudonymous patient code, the same in every file.", example="P001"
)

PATIENTS = TableSpec(
    name="patients",
    description="One row a patient: randomized arm and baseline covariates.",
    extra_numeric_columns=True,
    columns=(
        PATIENT_ID,
        ColumnSpec(
            "arm",
            "category",
            "Randomized arm, spelled exactly as `control_arm` or `experimental_arm` in study.toml.",
            example="IFN-a + CAR-T",
        ),
        ColumnSpec("age_years", "number", "Age at infusion.", unit="years", required=False,
                   blank="unknown", minimum=0, maximum=120, example="34"),
        ColumnSpec("sex", "category", "Sex.", required=False, blank="unknown",
                   allowed=SEXES, example="F"),
        ColumnSpec("baseline_blasts_pct", "number", "Bone-marrow blasts before lymphodepletion.",
                   unit="% of nucleated cells", required=False, blank="unknown",
                   minimum=0, maximum=100, example="22.5"),
        ColumnSpec("car_t_dose_per_kg", "number", "CAR-T cells infused per kg body weight.",
                   unit="cells/kg", required=False, blank="unknown", minimum=0,
                   maximum=MAX_DOSE_PER_KG, example="1.2e7"),
        ColumnSpec("prior_hsct", "number", "Allogeneic transplant before CAR-T: 1 yes, 0 no.",
                   required=False, blank="unknown", minimum=0, maximum=1, example="0"),
    ),
    notes=(
        "Any other column must be numeric; it is offered to the models as a baseline covariate.",
    ),
)

OUTCOMES = TableSpec(
    name="outcomes",
    description="One row a patient: response, relapse, transplant, death and follow-up, "
    "all in days since infusion.",
    columns=(
        PATIENT_ID,
        ColumnSpec("response", "category", "Best response: CR, CRi (CR with incomplete count "
                   "recovery) or NR (no response).", allowed=RESPONSES, example="CR"),
        ColumnSpec("response_day", "day", "Day remission was first documented (CR/CRi).",
                   unit="days", blank="no remission (required blank for NR)", maximum=MAX_DAY, example="28"),
        ColumnSpec("relapse_day", "day", "Day of relapse after remission.", unit="days",
                   blank="no relapse observed", maximum=MAX_DAY, example="243"),
        ColumnSpec("relapse_cd19", "category", "CD19 status of the relapse.",
                   allowed=CD19_STATUS, blank="no relapse", example="negative"),
        ColumnSpec("hsct_day", "day", "Day of a consolidative allogeneic transplant after CAR-T.",
                   unit="days", blank="no transplant", maximum=MAX_DAY, example=""),
        ColumnSpec("new_therapy_day", "day", "Day of the first CAR-T re-infusion or other anti-CD19 therapy "
                   "(e.g. blinatumomab) after the first infusion.", unit="days", required=False,
                   blank="no new anti-CD19 therapy", maximum=MAX_DAY, example=""),
        ColumnSpec("death_day", "day", "Day of death from any cause.", unit="days",
                   blank="alive at last follow-up", maximum=MAX_DAY, example=""),
        ColumnSpec("last_followup_day", "day", "Last day the patient was known alive and "
                   "assessed (the death day if the patient died).", unit="days", maximum=MAX_DAY,
                   example="1460"),
    ),
    notes=("Every event day must be on or before `last_followup_day`. A relapse comes after "
           "`response_day`, a transplant or a death of a responder on or after it; a relapse or a "
           "transplant comes on or before `death_day`.",
           "The kinetic cut: the first of `hsct_day`, `relapse_day` and `new_therapy_day` ends a patient's "
           "CAR-T and MRD data. Samples and assessments taken after that day no longer follow the first "
           "infusion's natural course (transplant conditioning ablates CAR-T cells and clears disease; salvage "
           "or re-infusion restarts the kinetics), so the CAR-T, MRD and joint models leave them out and the "
           "fit's warnings count them. A sample on that day is kept (drawn before the transplant or new "
           "therapy; on a relapse day, the relapse assessment itself)."),
)

CART_KINETICS = TableSpec(
    name="cart_kinetics",
    description="One row a blood sample: CAR-T transgene level.",
    required=False,
    columns=(
        PATIENT_ID,
        ColumnSpec("day", "day", "Sampling day.", unit="days", maximum=MAX_DAY, example="7"),
        ColumnSpec("value", "cart_value", "Measured level (above 0). Blank, `BLQ` or `<x` means below "
                   "the lower limit of quantification and is kept as a censored observation.",
                   unit="as in `unit`", blank="below the LLOQ", minimum=0, maximum=MAX_LEVEL,
                   example="15400"),
        ColumnSpec("lloq", "number", "Lower limit of quantification of this sample's assay run (above 0).",
                   unit="as in `unit`", blank="unknown (then `value` must be quantified or `<x`)",
                   minimum=0, maximum=MAX_LEVEL, example="50"),
        ColumnSpec("unit", "category", "Unit of `value` and `lloq`; one unit per file, one of: "
                   f"{supported_units_text()}. The CAR-T model centres its prior on the typical peak level in "
                   "this unit (toolkit/data/units.py gives each centre and its source).",
                   example="copies/ug"),
    ),
    notes=("Rows of a patient are in increasing day order.",
           "Samples after the patient's first HSCT, relapse or new therapy are not used by the models "
           "(see the kinetic cut under outcomes.csv); keep them in the file."),
)

MRD = TableSpec(
    name="mrd",
    description="One row an MRD assessment.",
    required=False,
    columns=(
        PATIENT_ID,
        ColumnSpec("day", "day", "Assessment day.", unit="days", maximum=MAX_DAY, example="28"),
        ColumnSpec("mrd_pct", "mrd_value", "Leukemic cells as a percentage. Blank, `negative`, 0 "
                   "or `<x` means below the detection limit (censored, never dropped); `PNQ` "
                   "means detected but below the limit of quantification (interval-censored).",
                   unit="% of nucleated cells", blank="below the detection limit",
                   minimum=0, maximum=100, example="0.0032"),
        ColumnSpec("lod_pct", "number", "Detection limit (sensitivity) of this assessment (above 0).",
                   unit="%", blank="unknown (then `mrd_pct` must be quantified or `<x`)",
                   minimum=0, maximum=100, example="0.01"),
        ColumnSpec("loq_pct", "number", "Quantification limit (above 0), needed for `PNQ` values.",
                   unit="%", required=False, blank="same as the detection limit",
                   minimum=0, maximum=100, example="0.01"),
        ColumnSpec("method", "category", "Assay.", allowed=MRD_METHODS, example="flow"),
        ColumnSpec("specimen", "category", "Bone marrow (BM) or peripheral blood (PB).",
                   allowed=SPECIMENS, example="BM"),
    ),
    notes=("Rows of a patient are in increasing day order (several methods may share a day).",
           "Assessments after the patient's first HSCT, relapse or new therapy are not used by the models "
           "(see the kinetic cut under outcomes.csv); keep them in the file."),
)

TABLES: dict[str, TableSpec] = {t.name: t for t in (PATIENTS, OUTCOMES, CART_KINETICS, MRD)}

STUDY_KEYS = {
    "name": "Study name shown in reports.",
    "control_arm": "Label of the control arm, exactly as in patients.csv `arm`.",
    "experimental_arm": "Label of the experimental arm, exactly as in patients.csv `arm`.",
    "notes": "Optional free text.",
}

# Below-limit spellings.
CART_BLQ_TOKENS = ("", "blq", "bloq", "<lloq")
MRD_NEGATIVE_TOKENS = ("", "negative", "neg", "undetectable", "not detected")
MRD_PNQ_TOKENS = ("pnq", "positive", "positive not quantifiable")
