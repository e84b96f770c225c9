"""Build hook: ship the repository's data folders inside the package.

Everything else about the build is declared in pyproject.toml. The boot templates (pxe/), post-install hooks
(hooks/), sample recipes (recipes/) and image definitions with the files they reference (images/) stay at
the top of the repository, where a checkout uses them; package data must live inside the package, and
setuptools' package-dir mapping cannot add them without listing every subpackage of provision by hand. So
``build_py`` copies them into ``<build>/provision/_data/<name>/`` for wheels, where provision/resources.py
finds them with importlib.resources once installed. Editable installs copy nothing: provision/resources.py
reads the checkout's folders. MANIFEST.in puts the same folders into the sdist.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
DATA_NAMES = ("pxe", "hooks", "recipes", "images")  # == provision.resources.DATA_NAMES (tests/functional/test_wheel.py)
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*~", ".*.swp")


class BuildPyWithData(build_py):
    """``build_py`` that also copies pxe/, hooks/, recipes/ and images/ into provision/_data/."""

    def _data_target(self) -> Path:
        return Path(self.build_lib) / "provision" / "_data"

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = self._data_target()
        for name in DATA_NAMES:
            source = ROOT / name
            if not source.is_dir():
                raise FileNotFoundError(f"{source}: data folder missing, the wheel would not work")
            shutil.rmtree(target / name, ignore_errors=True)  # a file deleted since the last build goes too
            shutil.copytree(source, target / name, ignore=IGNORED)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        """The package's files plus the copied data (install and wheel records list them)."""
        outputs = list(super().get_outputs(include_bytecode))
        if not self.editable_mode:
            target = self._data_target()
            outputs += sorted(str(p) for name in DATA_NAMES for p in (target / name).rglob("*") if p.is_file())
        return outputs


setup(cmdclass={"build_py": BuildPyWithData})
