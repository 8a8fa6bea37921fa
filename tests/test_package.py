"""The package: shipped folders found in a checkout and in a wheel, the wheel's contents, notebooks for a user.

The wheel is built (``python -m build``: sdist, then the wheel from it) from a
copy of the sources in a temporary folder, so the checkout gains no build/ or
egg-info; the slow test installs it into a fresh virtual environment and runs
the commands from outside the checkout.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

import toolkit
from toolkit import resources
from toolkit.cli import main
from toolkit.notebooks import EXAMPLE_COPY, list_notebooks

ROOT = resources.CHECKOUT
SOURCES = ["pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE", "CITATION.cff", "toolkit",
           *resources.RESOURCES]
EXTRA_SPEC = "design_zz_packaging_probe.toml"  # a spec added after this test was written must ship too


def test_resources_found_in_the_checkout():
    assert (resources.path("models") / "durability_primary.toml").is_file()
    assert (resources.path("data_templates/example") / "study.toml").is_file()
    assert (resources.path("data_templates") / "DATA_DICTIONARY.md").is_file()
    assert {p.name for p in list_notebooks()} >= {"01_cohort_overview.ipynb", "05_joint_model.ipynb"}
    with pytest.raises(resources.ResourceError, match="not a folder shipped with the toolkit; use one of models"):
        resources.path("docs")


def test_installed_copy_wins_and_a_missing_folder_is_named(tmp_path, monkeypatch):
    (tmp_path / "installed" / "models").mkdir(parents=True)
    monkeypatch.setattr(resources, "INSTALLED", tmp_path / "installed")
    assert resources.path("models/x.toml") == tmp_path / "installed" / "models" / "x.toml"
    monkeypatch.setattr(resources, "CHECKOUT", tmp_path / "nowhere")
    with pytest.raises(resources.ResourceError, match=r"notebooks/ folder is missing .* reinstall the package"):
        resources.path("notebooks")


def test_readme_spec_paths_work_outside_a_clone(tmp_path, monkeypatch):
    """``--spec models/durability_primary.toml`` (as in the README) from a folder without models/: the shipped spec."""
    from toolkit.specs import SpecError, load_spec

    monkeypatch.chdir(tmp_path)
    shipped = resources.path("models") / "durability_primary.toml"
    for name in ("models/durability_primary.toml", "durability_primary.toml", "durability_primary"):
        assert Path(load_spec(name, model="durability")["path"]) == shipped
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "durability_primary.toml").write_text('model = "durability"\n')
    assert load_spec("models/durability_primary.toml")["path"] == "models/durability_primary.toml"  # the user's own
    with pytest.raises(SpecError, match=r"nope.toml: spec file not found; .* shipped with the toolkit \(cart_primary, "):
        load_spec("models/nope.toml")
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec("elsewhere/durability_primary.toml")  # only a bare name or models/NAME falls back


@pytest.mark.parametrize("path", list_notebooks(), ids=lambda p: p.name)
def test_notebooks_use_the_default_python3_kernel(path):
    """A plain pip install registers no kernel of its own; ``python3`` is the environment Jupyter runs in."""
    assert json.loads(path.read_text())["metadata"]["kernelspec"]["name"] == "python3"
    assert re.search(r"^#     name: python3$", path.with_suffix(".py").read_text(), re.MULTILINE)


def test_version_license_and_citation(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"toolkit {toolkit.__version__}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and (ROOT / "LICENSE").read_text().startswith("MIT License")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["message"] and cff["title"]
    assert cff["authors"] and all("name" in a or "family-names" in a for a in cff["authors"])
    assert str(cff["version"]) == toolkit.__version__ and cff["license"] == project["license"]


def test_notebooks_command_copies_notebooks_and_example(tmp_path, capsys):
    dest = tmp_path / "nb"
    assert main(["notebooks", str(dest)]) == 0
    assert sorted(p.name for p in dest.glob("*.ipynb")) == [p.name for p in list_notebooks()]
    for copy in dest.glob("*.ipynb"):
        nb = json.loads(copy.read_text())
        first = next(c for c in nb["cells"] if c["cell_type"] == "code")
        assert re.search(rf'^cohort_path = "{EXAMPLE_COPY}"', "".join(first["source"]), re.MULTILINE), copy.name
        assert "jupytext" not in nb["metadata"]  # the text twin stays in the repository
    assert main(["validate", str(dest / EXAMPLE_COPY)]) == 0
    capsys.readouterr()
    assert main(["notebooks", str(dest)]) == 2  # never over a user's (possibly edited) copies
    assert "already exists and is not empty" in capsys.readouterr().out


def test_run_notebooks_refuses_to_run_nothing(tmp_path, capsys, monkeypatch):
    (tmp_path / "empty").mkdir()
    args = ["run-notebooks", "--data", str(ROOT / "data_templates" / "example"), "--out", str(tmp_path / "out")]
    assert main(args + ["--notebooks", str(tmp_path / "empty")]) == 2
    assert "no notebooks (NN_name.ipynb) found in" in capsys.readouterr().out
    assert main(args + ["--notebooks", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().out
    monkeypatch.setattr("toolkit.notebooks.NOTEBOOK_DIR", tmp_path / "empty")  # a wheel without notebooks
    assert main(args) == 2
    assert "the installation is incomplete" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


def test_run_notebooks_without_the_notebooks_extra_names_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "papermill", None)  # as if not installed
    args = ["run-notebooks", "--data", str(ROOT / "data_templates" / "example"), "--out", str(tmp_path / "out")]
    assert main(args) == 2
    assert 'needs JupyterLab and papermill, which are not installed: pip install "cart-toolkit[notebooks]"' in (
        capsys.readouterr().out.replace("\n", ""))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """``python -m build`` on a copy of the sources (plus one extra spec); returns (sdist, wheel)."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, src / name, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints",
                                                                              "_resources"))
        else:
            shutil.copy2(source, src / name)
    (src / "models" / EXTRA_SPEC).write_text('model = "durability"\n')
    dist = tmp_path_factory.mktemp("dist")
    # --no-isolation: the test environment's setuptools (test extra), no download.
    done = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(src)],
                          capture_output=True, text=True, cwd=src)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (sdist,), (wheel,) = dist.glob("*.tar.gz"), dist.glob("*.whl")
    return sdist, wheel


def test_wheel_ships_specs_templates_example_and_notebooks(built):
    _, wheel = built
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"toolkit/_resources/{p.relative_to(ROOT).as_posix()}"
                for top in resources.RESOURCES for p in resources.files(ROOT, top)}
    assert expected - names == set()
    for must in ("models/durability_primary.toml", f"models/{EXTRA_SPEC}", "data_templates/DATA_DICTIONARY.md",
                 "data_templates/patients.csv", "data_templates/example/truth.json",
                 "notebooks/04_remission_durability.ipynb", "notebooks/04_remission_durability.py"):
        assert f"toolkit/_resources/{must}" in names, must
    code = {p.relative_to(ROOT).as_posix() for p in (ROOT / "toolkit").rglob("*.py") if "__pycache__" not in p.parts}
    assert code - names == set()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert wheel.name == f"cart_toolkit-{toolkit.__version__}-py3-none-any.whl"


def _fresh_venv(tmp: Path, wheel: Path) -> Path:
    """A venv holding only the wheel; this environment's packages (PyMC, ...) are visible through a .pth file.

    (``--system-site-packages`` from a venv's python would expose the base
    interpreter's packages, not this venv's.)
    """
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    import site as this_site

    # Plain path lines: appended after the venv's own site-packages, so the wheel's toolkit comes first.
    Path(site, "_test_env.pth").write_text("\n".join(this_site.getsitepackages()) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    str(wheel)], check=True)
    return venv


@pytest.mark.slow
def test_wheel_works_from_outside_the_checkout(built, tmp_path):
    """From /tmp with the wheel installed: --version, resources, demo --fast, notebooks, one notebook run."""
    _, wheel = built
    venv = _fresh_venv(tmp_path, wheel)
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    # The data files the dependencies install into their prefix (nbconvert's templates, kernel specs) are in
    # this environment's prefix; a real install has them in its own.
    env["JUPYTER_PATH"] = str(Path(sys.prefix) / "share" / "jupyter")

    def run(*command):
        done = subprocess.run(list(command), capture_output=True, text=True, cwd=work, env=env, timeout=3600)
        assert done.returncode == 0, f"{command}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
        return done.stdout

    toolkit_cli = str(venv / "bin" / "toolkit")
    assert run(toolkit_cli, "--version").strip() == f"toolkit {toolkit.__version__}"
    where = json.loads(run(str(venv / "bin" / "python"), "-c", "import json, toolkit; from toolkit import resources; "
                           "print(json.dumps([toolkit.__file__, str(resources.path('models'))]))"))
    assert all(Path(p).is_relative_to(venv) for p in where), where  # the wheel, not the checkout
    run(toolkit_cli, "notebooks", "nb")
    one = work / "one"
    one.mkdir()
    shutil.copy2(work / "nb" / "01_cohort_overview.ipynb", one)
    run(toolkit_cli, "run-notebooks", "--notebooks", "one", "--data", f"nb/{EXAMPLE_COPY}", "--out", "executed",
        "--fast")
    assert (work / "executed" / "01_cohort_overview.html").stat().st_size > 10_000
    out = run(toolkit_cli, "demo", "--fast", "--out", "demo")
    assert "Report:" in out and (work / "demo" / "report.html").is_file()
