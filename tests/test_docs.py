"""The repository's documents: every default prior sourced in docs/priors.md, nothing cited outside the repository.

Each check is a small function that returns what it finds wrong, so that each test pairs the real
repository (nothing wrong) with a broken variant that the same function flags.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRIORS_DOC = ROOT / "docs" / "priors.md"
MODEL_MODULES = ("cart", "durability", "mrd", "joint")  # toolkit/models/<name>.py; anchors start "<name>-"
POINTER = re.compile(r"docs/priors\.md#([A-Za-z0-9_-]+)")
DOC = "docs/priors" ".md#"  # in two pieces, so that this file's own examples are not pointers
# Documents outside the repository that nothing in it may cite. Written in pieces so that this file
# does not cite them itself.
FORBIDDEN = tuple(re.compile(p) for p in (
    r"domain" + r"\.md", r"\bdomain" + " §", r"\.\./" + "shared", r"(?<![\w.-])" + "shared" + "/",
    "DESIGN" + r"\.md", "STYLE" + r"\.md", "ENVIRONMENT" + r"\.md",
))


# --------------------------------------------------------------------------- checkers


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the Markdown headings (lower case, punctuation dropped, spaces to '-'),
    plus explicit ``<a id="...">`` anchors. Fenced code is skipped."""
    anchors, fenced = set(), False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).lower())
            anchors.add(text.replace(" ", "-"))
    anchors.update(re.findall(r'<a\s+(?:id|name)="([^"]+)"', markdown))
    return anchors


def broken_pointers(texts: dict[str, str], anchors: set[str]) -> list[str]:
    """``file: #anchor`` for every ``docs/priors.md#<anchor>`` in ``texts`` that is not a heading anchor."""
    return [f"{name}: #{a}" for name, text in texts.items() for a in POINTER.findall(text) if a not in anchors]


def broken_internal_links(markdown: str) -> list[str]:
    """Links ``](#anchor)`` inside a Markdown document whose anchor it does not define."""
    anchors = heading_anchors(markdown)
    return [a for a in re.findall(r"\]\(#([^)]+)\)", markdown) if a not in anchors]


def outside_references(texts: dict[str, str]) -> list[str]:
    """``file:line: text`` for every line that cites a document outside the repository."""
    found = []
    for name, text in texts.items():
        for number, line in enumerate(text.splitlines(), 1):
            if any(p.search(line) for p in FORBIDDEN):
                found.append(f"{name}:{number}: {line.strip()[:120]}")
    return found


def prior_anchor(module: str, field: str) -> str:
    """The docs/priors.md anchor of a prior: ``<module>-<field with - for _>``."""
    return f"{module}-{field.replace('_', '-')}"


def unsourced_priors(source: str, module: str, anchors: set[str]) -> list[str]:
    """Fields of the prior registries (``@dataclass`` classes named ``*Priors``) in a module's ``source``
    that lack a ``# docs/priors.md#<module>-<field>`` comment on their declaration or a section with
    that anchor in docs/priors.md; and prior sets (``if name == "<set>":`` inside them, other than
    ``default``) that lack the same for ``<module>-<set>``."""
    lines = source.splitlines()
    problems = []
    for cls in ast.walk(ast.parse(source)):
        if not (isinstance(cls, ast.ClassDef) and cls.name.endswith("Priors")):
            continue
        for node in cls.body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                name = node.target.id
                anchor = prior_anchor(module, name)
                declaration = "\n".join(lines[node.lineno - 1:node.end_lineno])
                if f"docs/priors.md#{anchor}" not in declaration:
                    problems.append(f"{cls.name}.{name}: no pointer comment to #{anchor}")
                if anchor not in anchors:
                    problems.append(f"{cls.name}.{name}: no section '#{anchor}' in docs/priors.md")
        for node in ast.walk(cls):
            if (isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == "name"
                    and len(node.comparators) == 1 and isinstance(node.comparators[0], ast.Constant)
                    and node.comparators[0].value != "default"):
                anchor = prior_anchor(module, str(node.comparators[0].value))
                if f"docs/priors.md#{anchor}" not in lines[node.lineno - 1]:
                    problems.append(f"{cls.name} set {node.comparators[0].value!r}: no pointer to #{anchor}")
                if anchor not in anchors:
                    problems.append(f"{cls.name} set {node.comparators[0].value!r}: no section '#{anchor}'")
    return problems


def repository_texts() -> dict[str, str]:
    """Every text file git tracks or would track (untracked, not ignored), by repository path."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
        paths = [ROOT / p for p in listed if p]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: walk, skipping generated folders
        skip = {".git", ".venv", "__pycache__", ".pytest_cache", "node_modules", ".ipynb_checkpoints"}
        paths = [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.relative_to(ROOT).parts)]
    texts = {}
    for path in paths:
        if not path.is_file():  # listed but deleted in the working tree
            continue
        try:
            texts[str(path.relative_to(ROOT))] = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary files cite nothing
    return texts


# --------------------------------------------------------------------------- the repository


@pytest.fixture(scope="module")
def doc_anchors() -> set[str]:
    return heading_anchors(PRIORS_DOC.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def texts() -> dict[str, str]:
    return repository_texts()


def test_every_pointer_to_priors_doc_has_its_section(texts, doc_anchors):
    pointers = sum(len(POINTER.findall(t)) for name, t in texts.items() if name.startswith("toolkit/"))
    assert pointers > 50  # the models point to it prior by prior
    assert broken_pointers(texts, doc_anchors) == []


def test_priors_doc_internal_links_resolve():
    assert broken_internal_links(PRIORS_DOC.read_text(encoding="utf-8")) == []


def test_nothing_cites_documents_outside_the_repository(texts):
    assert len(texts) > 50 and "toolkit/models/cart.py" in texts and "docs/priors.md" in texts
    assert outside_references(texts) == []


@pytest.mark.parametrize("module", MODEL_MODULES)
def test_every_registered_prior_points_to_its_section(module, doc_anchors):
    source = (ROOT / "toolkit" / "models" / f"{module}.py").read_text(encoding="utf-8")
    assert unsourced_priors(source, module, doc_anchors) == []


@pytest.mark.parametrize("module", MODEL_MODULES)
def test_the_parser_sees_every_field_of_the_registry(module):
    """The AST walk of unsourced_priors covers the same fields as the imported dataclasses."""
    mod = importlib.import_module(f"toolkit.models.{module}")
    registries = [obj for name, obj in vars(mod).items()
                  if name.endswith("Priors") and dataclasses.is_dataclass(obj) and obj.__module__ == mod.__name__]
    assert registries, f"no prior registry found in toolkit/models/{module}.py"
    source = Path(mod.__file__).read_text(encoding="utf-8")
    parsed = {(c.name, n.target.id) for c in ast.walk(ast.parse(source)) if isinstance(c, ast.ClassDef)
              for n in c.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    for cls in registries:
        assert {(cls.__name__, f.name) for f in dataclasses.fields(cls)} <= parsed
    for name in getattr(mod, "PRIOR_SETS", ()):
        if name != "default":
            assert f"docs/priors.md#{prior_anchor(module, name)}" in source


# --------------------------------------------------------------------------- the checks can fail

BROKEN_MODULE = '''
from dataclasses import dataclass

@dataclass(frozen=True)
class ToyPriors:
    sourced: tuple[float, float] = (0.0, 1.0)  # @toy-sourced
    undocumented: tuple[float, float] = (0.0, 1.0)  # @toy-undocumented
    bare: float = 0.5

    @classmethod
    def named(cls, name):
        if name == "default":
            return cls()
        if name == "skeptical":
            return cls(sourced=(0.0, 0.3))
'''.replace("@", DOC)


def test_unsourced_priors_flags_a_new_field_without_source():
    problems = unsourced_priors(BROKEN_MODULE, "toy", {"toy-sourced", "toy-bare"})
    assert problems == [
        "ToyPriors.undocumented: no section '#toy-undocumented' in docs/priors.md",
        "ToyPriors.bare: no pointer comment to #toy-bare",
        "ToyPriors set 'skeptical': no pointer to #toy-skeptical",
        "ToyPriors set 'skeptical': no section '#toy-skeptical'",
    ]


def test_broken_pointer_and_link_are_flagged():
    doc = "# Priors\n\n### cart-mu-cmax\n\nsee [x](#cart-mu-cmax) and [y](#cart-missing)\n"
    anchors = heading_anchors(doc)
    assert {"priors", "cart-mu-cmax"} <= anchors
    assert heading_anchors("## Near the simulator's values (`a.py`)") == {"near-the-simulators-values-apy"}
    texts = {"a.py": "x = 1  # " + DOC + "cart-mu-cmax", "b.py": "# " + DOC + "cart-mu-tmax"}
    assert broken_pointers(texts, anchors) == ["b.py: #cart-mu-tmax"]
    assert broken_internal_links(doc) == ["cart-missing"]


def test_outside_references_are_flagged():
    texts = {"ok.md": "cite Stein 2019, Table 1; see " + DOC + "cart-mu-cmax",
             "bad.py": "\n".join(["# see " + name for name in (
                 "domain" + ".md §1.1", "domain" + " §2.3", "../" + "shared" + "/x", "/work/" + "shared" + "/y",
                 "DESIGN" + ".md", "STYLE" + ".md", "ENVIRONMENT" + ".md")])}
    found = outside_references(texts)
    assert [f.split(":")[1] for f in found] == [str(i) for i in range(1, 8)]
    assert all(f.startswith("bad.py:") for f in found)
