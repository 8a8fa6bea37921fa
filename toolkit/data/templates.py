"""Empty template files and the data dictionary, generated from the schema."""

from __future__ import annotations

from pathlib import Path

from toolkit.data.schema import KINDS, STUDY_KEYS, TABLES

STUDY_TEMPLATE = '''# Cohort metadata. Arm labels must match patients.csv `arm` exactly.
name = "My CAR-T study"
control_arm = "CAR-T"
experimental_arm = "IFN-a + CAR-T"
notes = ""
'''


def data_dictionary() -> str:
    """The data dictionary as Markdown (one table a file)."""
    lines = [
        "# Data dictionary",
        "",
        "Generated from `toolkit/data/schema.py` by `toolkit templates`; do not edit by hand.",
        "",
        "A cohort is a folder. Time is **days since CAR-T infusion** (day 0). No calendar dates and",
        "no direct identifiers (names, birth dates, record numbers) are accepted: use pseudonymous",
        "patient codes. Each table may be a `.csv` (UTF-8, comma-separated, one header row) or an",
        "`.xlsx` (first sheet) file. Blank means \"did not happen\" or \"unknown\" as stated below.",
        "",
        "## study.toml",
        "",
        "| key | meaning |",
        "|---|---|",
    ]
    lines += [f"| `{k}` | {v} |" for k, v in STUDY_KEYS.items()]
    for table in TABLES.values():
        status = "required" if table.required else "optional"
        lines += ["", f"## {table.name}.csv ({status})", "", table.description, ""]
        lines += ["| column | required | type | unit | allowed values | blank means | example | meaning |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in table.columns:
            allowed = ", ".join(c.allowed) if c.allowed else ""
            if c.minimum is not None or c.maximum is not None:
                lo = ("0" if c.kind == "day" else "") if c.minimum is None else f"{c.minimum:g}"
                hi = "" if c.maximum is None else f"{c.maximum:g}"
                allowed = allowed or f"{lo} to {hi}".strip()
            blank = c.blank if c.blank is not None else "not allowed"
            lines.append(f"| `{c.name}` | {'yes' if c.required else 'no'} | {KINDS[c.kind]} | {c.unit} | "
                         f"{allowed} | {blank} | {c.example} | {c.description} |")
        for note in table.notes:
            lines += ["", f"- {note}"]
    return "\n".join(lines) + "\n"


def write_templates(folder: str | Path) -> Path:
    """Write header-only CSVs, study.toml and DATA_DICTIONARY.md into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "study.toml").write_text(STUDY_TEMPLATE, encoding="utf-8")
    for table in TABLES.values():
        (folder / f"{table.name}.csv").write_text(",".join(table.column_names) + "\n", encoding="utf-8")
    (folder / "DATA_DICTIONARY.md").write_text(data_dictionary(), encoding="utf-8")
    return folder
