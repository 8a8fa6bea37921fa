"""Importers: pharmacometric (NONMEM/Monolix), CDISC ADaM and one-workbook data to a cohort folder.

Each importer writes a cohort folder that validates, plus ``import_report.md``
and ``import_report.json`` (every source column used, every conversion with
its count, every row left out with its reason, what could not be derived),
and returns an ``ImportResult``. Source subject identifiers become
pseudonymous codes; the key is written to a separate file outside the
cohort folder that the user keeps private.
"""

from toolkit.importers.common import ImportDataError, ImportReport, ImportResult


def __getattr__(name):  # the importers load lazily: the CLI parser imports this package
    if name == "import_nonmem":
        from toolkit.importers.nonmem import import_nonmem
        return import_nonmem
    if name == "import_adam":
        from toolkit.importers.adam import import_adam
        return import_adam
    if name == "import_workbook":
        from toolkit.importers.workbook import import_workbook
        return import_workbook
    raise AttributeError(name)


__all__ = ["ImportDataError", "ImportReport", "ImportResult", "import_adam", "import_nonmem", "import_workbook"]
