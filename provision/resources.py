"""Where the data provision ships with is: boot templates, post-install hooks, sample recipes, image definitions.

The folders live at the top of the repository (``pxe/``, ``hooks/``, ``recipes/``, ``images/``), next to the
``provision`` package. A wheel carries a copy of them as package data in ``provision/_data/`` (setup.py's
``build_py`` hook copies them at build time). ``data_dir`` answers with:

- the source checkout's folder when provision runs from a checkout (an editable install, the tests,
  ``scripts/demo``): the package's parent folder holds ``pyproject.toml`` and the folder asked for;
- else the installed package data, found with ``importlib.resources``.

Every default that points at these folders (``templates_dir``, ``recipes_dir``, the default recipe folder of
``provision recipes``, the demo's tiny image) comes from here. Standard library only.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Literal, get_args

DataName = Literal["pxe", "hooks", "recipes", "images"]
DATA_NAMES: tuple[DataName, ...] = get_args(DataName)  # setup.py copies the same folders into the wheel
PACKAGE_DATA = "_data"  # provision/_data/<name> in an installed wheel

SOURCE_ROOT = Path(__file__).resolve().parent.parent  # the repository when running from a checkout


def checkout_root() -> Path | None:
    """The source checkout provision runs from (the folder holding pyproject.toml and provision/), or None
    when it runs from an installed wheel (the package's parent is site-packages)."""
    root = SOURCE_ROOT
    if (root / "pyproject.toml").is_file() and (root / "pxe").is_dir():
        return root
    return None


def installed_dir(name: DataName) -> Path:
    """The installed package data folder ``provision/_data/<name>`` (it may not exist: nothing is checked).

    Raises RuntimeError when the package is not on a file system (e.g. imported from a zip file), since the
    callers need real folders (Jinja's FileSystemLoader, globbing recipes, overlays copied into images)."""
    found = importlib.resources.files("provision").joinpath(PACKAGE_DATA, name)
    if not isinstance(found, Path):
        raise RuntimeError(f"provision's package data is not on a file system: {found}")
    return found


def data_dir(name: DataName) -> Path:
    """The folder ``name`` (pxe, hooks, recipes or images): the checkout's when running from one, else the
    installed package data. The folder is not required to exist; callers report a missing file themselves."""
    if name not in DATA_NAMES:
        raise ValueError(f"unknown data folder {name!r} (one of {', '.join(DATA_NAMES)})")
    root = checkout_root()
    return root / name if root is not None else installed_dir(name)
