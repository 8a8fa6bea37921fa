"""A validation problem and the error that carries all of them at once."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with a cohort: where it is and how to fix it.

    ``row`` is the spreadsheet row number (the header is row 1); ``None``
    means the problem concerns the whole file or column.
    """

    file: str
    row: int | None = None
    column: str | None = None
    value: str | None = None
    message: str = ""
    fix: str = ""

    def __str__(self) -> str:
        where = self.file
        if self.row is not None:
            where += f", row {self.row}"
        if self.column is not None:
            where += f", column '{self.column}'"
        value = f" (value {self.value!r})" if self.value is not None else ""
        return f"{where}: {self.message}{value}. Fix: {self.fix}"


class CohortValidationError(ValueError):
    """Raised with every problem found in a cohort folder."""

    def __init__(self, folder: str, problems: list[Problem]):
        self.folder = folder
        self.problems = sorted(set(problems), key=_sort_key)
        lines = [f"{len(self.problems)} problem(s) in cohort {folder}:"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


def _sort_key(p: Problem):
    return (p.file, p.row if p.row is not None else -1, p.column or "", p.message)
