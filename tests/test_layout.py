"""The package layout: the science does not import the simulator, and no import cycle comes back.

Read from the source with ``ast`` (nothing is imported), so an import inside a
function counts as much as one at the top of a module: a deferred import is how
a cycle hides. Each rule is paired with a broken variant that it must flag.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "toolkit"


def module_name(path: Path, package: Path = PACKAGE) -> str:
    """``toolkit/models/cart.py`` -> ``toolkit.models.cart``; a package's ``__init__`` is the package."""
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, known: set[str]) -> set[str]:
    """Every ``toolkit`` module a source imports, anywhere in it (top level or inside a function).

    ``from toolkit import simulate`` and ``from toolkit.simulate import x`` both count as
    importing ``toolkit.simulate``; names that are not modules of ``known`` are ignored.
    """
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{alias.name}" for alias in node.names}
    return out & known


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (self-imports and parent packages left out)."""
    paths = {module_name(p, package): p for p in package.rglob("*.py")}
    known = set(paths)
    graph = {}
    for name, path in paths.items():
        targets = imported_modules(path.read_text(encoding="utf-8"), known)
        graph[name] = {t for t in targets if t != name and not name.startswith(t + ".")}
    return graph


def science_modules(graph) -> list[str]:
    """The models and the estimands: the modules that must not depend on the synthetic-data code."""
    return sorted(m for m in graph if m.startswith("toolkit.models") or "estimands" in m)


def report_sections(graph) -> list[str]:
    return sorted(m for m in graph if m.startswith("toolkit.report_"))


def layering_violations(graph) -> list[str]:
    """Each forbidden edge as "importer -> imported" (empty when the layout is as intended)."""
    bad = [f"{m} -> toolkit.simulate" for m in science_modules(graph) if "toolkit.simulate" in graph[m]]
    bad += [f"{m} -> toolkit.report" for m in report_sections(graph) if "toolkit.report" in graph[m]]
    return bad


def cycles(graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_graph_sees_the_modules_it_checks():
    graph = import_graph()
    assert {"toolkit.models.cart", "toolkit.models.kinetics", "toolkit.simulate", "toolkit.report"} <= set(graph)
    assert len(science_modules(graph)) >= 7 and len(report_sections(graph)) >= 3
    assert "toolkit.models.kinetics" in graph["toolkit.simulate"]  # the simulator uses the model's curve


def test_models_and_estimands_do_not_import_the_simulator_and_report_sections_not_the_report():
    assert layering_violations(import_graph()) == []


def test_report_sections_are_not_in_a_cycle_with_the_report():
    in_cycle = {m for component in cycles(import_graph()) for m in component}
    assert not in_cycle & {"toolkit.report", *report_sections(import_graph())}


def test_no_import_cycle_anywhere():
    """No cycle among all imports, those inside functions included: every layer imports only layers below it."""
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("old_path, name, home", [
    ("toolkit.fitting", "durability_inputs_from_run", "toolkit.data.from_run"),
    ("toolkit.plots.cart", "cart_inputs_from_run", "toolkit.data.from_run"),
    ("toolkit.mrd_estimands", "mrd_inputs_from_run", "toolkit.data.from_run"),
    ("toolkit.results", "inputs_from_run", "toolkit.data.from_run"),
    ("toolkit.results", "ResultMethods", "toolkit.inference"),
    ("toolkit.results", "Summary", "toolkit.summary"),
    ("toolkit.results", "estimands_frame", "toolkit.summary"),
    ("toolkit.results", "figure_builders", "toolkit.plots.runs"),
    ("toolkit.results", "figure_writer", "toolkit.plots.runs"),
])
def test_moved_names_keep_their_old_import_paths(old_path, name, home):
    import importlib

    assert getattr(importlib.import_module(old_path), name) is getattr(importlib.import_module(home), name)


def test_no_cycle_among_top_level_imports():
    """Imports at the top of a module form no cycle (a cycle there fails at import time or by order)."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = ast.Module(body=[n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))], type_ignores=[])
        targets = imported_modules(ast.unparse(top), set(paths))
        graph[name] = {t for t in targets if t != name and not name.startswith(t + ".")}
    assert cycles(graph) == []


# --------------------------------------------------------------------------- the checks can fail


def _fake_package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "toolkit"
    for rel, text in {"__init__.py": "", **files}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return root


@pytest.mark.parametrize("files, expected", [
    ({"simulate.py": "", "models/__init__.py": "",
      "models/cart.py": "def f():\n    from toolkit.simulate import cart_curve\n"},
     ["toolkit.models.cart -> toolkit.simulate"]),
    ({"simulate.py": "", "mrd_estimands.py": "from toolkit import simulate\n"},
     ["toolkit.mrd_estimands -> toolkit.simulate"]),
    ({"report.py": "import toolkit.report_cart\n",
      "report_cart.py": "def g():\n    from toolkit.report import _figure\n"},
     ["toolkit.report_cart -> toolkit.report"]),
])
def test_layering_check_flags_a_broken_layout(tmp_path, files, expected):
    assert layering_violations(import_graph(_fake_package(tmp_path, files))) == expected


def test_cycle_check_flags_a_deferred_import_cycle(tmp_path):
    root = _fake_package(tmp_path, {"report.py": "from toolkit.report_mrd import x\n",
                                    "report_mrd.py": "def x():\n    import toolkit.report\n",
                                    "report_format.py": ""})
    assert cycles(import_graph(root)) == [["toolkit.report", "toolkit.report_mrd"]]
    fixed = _fake_package(tmp_path / "fixed", {"report.py": "from toolkit.report_mrd import x\n",
                                               "report_mrd.py": "def x():\n    import toolkit.report_format\n",
                                               "report_format.py": ""})
    assert cycles(import_graph(fixed)) == []


def test_cycle_check_flags_a_base_class_whose_method_imports_its_subclass_module(tmp_path):
    """The cycle this layout had: the run folder code took its base class from the results API, whose
    ``save`` imported the run folder code back inside a method."""
    root = _fake_package(tmp_path, {"inference.py": "from toolkit.results import ResultMethods\n",
                                    "results.py": "class ResultMethods:\n    def save(self):\n"
                                                  "        from toolkit.inference import save_run\n"})
    assert cycles(import_graph(root)) == [["toolkit.inference", "toolkit.results"]]
