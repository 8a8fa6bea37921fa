"""Build hook: copy the shipped folders (specs, templates, example, notebooks) into the wheel.

``models/``, ``data_templates/`` and ``notebooks/`` stay at the top of the
repository, where users, tests and docs refer to them; at build time their
files (the globs in ``toolkit/resources.py``, so new files are picked up
without a list to update) are copied to ``toolkit/_resources/`` in the build
tree, where ``toolkit.resources.path`` finds them in an installed wheel.
Everything else is declared in ``pyproject.toml``.
"""

import runpy
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
_resources = runpy.run_path(str(HERE / "toolkit" / "resources.py"))  # no import of toolkit: its deps are absent


class BuildWithResources(build_py):
    """``build_py`` plus the shipped folders under ``toolkit/_resources/``."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install reads the checkout's folders
            return
        target = Path(self.build_lib) / "toolkit" / "_resources"
        for top in _resources["RESOURCES"]:
            for source in _resources["files"](HERE, top):
                dest = target / source.relative_to(HERE)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, dest)


setup(cmdclass={"build_py": BuildWithResources})
