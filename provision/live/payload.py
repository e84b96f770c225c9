"""The provision code that runs inside the live environment: ``provision.agent`` and what it imports.

The agent may use the standard library, ``requests`` and ``zstandard`` only (docs/agent.md). The files
are ``provision/__init__.py``, every ``provision/agent/*.py`` and, followed through their imports, any
other ``provision`` module they use (the bottom layer: ``provision/errors.py``, ``provision/macaddr.py`` and
``provision/wire/``). Every import of those files is checked here: an import of anything else (pydantic,
yaml ...) stops the build, naming file and module, instead of failing on a PC. The files are put under
``/opt/provision/provision/`` with ``.pyc`` compiled by the tree's own Python (so the bytecode always
matches its interpreter) and their sha256 is the ``agent`` digest.
"""

from __future__ import annotations

import ast
import hashlib
import os
import shutil
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import provision
from provision.builder.runner import Runner
from provision.live.errors import LiveBuildError

PACKAGE_DIR = Path(provision.__file__).resolve().parent
ALLOWED = frozenset({"requests", "zstandard", "provision"})
ROOTS = ("__init__.py", "agent/*.py")


def _module_file(package_dir: Path, dotted: str) -> Path | None:
    """``provision.a.b`` -> ``<package_dir>/a/b.py`` or ``a/b/__init__.py`` (None when neither exists)."""
    parts = dotted.split(".")[1:]
    base = package_dir.joinpath(*parts) if parts else package_dir
    for candidate in (base.with_suffix(".py") if parts else None, base / "__init__.py"):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _imports(path: Path, package: str) -> list[str]:
    """Absolute module names imported by the file at ``path`` (relative imports resolved in ``package``)."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            names.append(module)
            names += [f"{module}.{alias.name}" for alias in node.names if alias.name != "*"]
    return [name for name in names if name]


def agent_files(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """``provision/...`` relative path -> source file, for the agent and the provision modules it imports.

    LiveBuildError when a file imports something the live environment does not have.
    """
    found: dict[str, Path] = {}
    pending = [path for pattern in ROOTS for path in sorted(package_dir.glob(pattern))]
    while pending:
        path = pending.pop()
        rel = "provision/" + path.relative_to(package_dir).as_posix()
        if rel in found:
            continue
        found[rel] = path
        package = "provision." + ".".join(path.relative_to(package_dir).parent.parts)
        package = package.rstrip(".")
        for name in _imports(path, package):
            top = name.split(".")[0]
            if top == "__future__" or top in sys.stdlib_module_names:
                continue
            if top not in ALLOWED:
                raise LiveBuildError(
                    f"live: {rel} imports {name}, which the live environment does not have "
                    f"(the agent may use the standard library, requests and zstandard only)",
                    step="agent",
                    file=rel,
                    module=name,
                )
            if top == "provision":
                module = _module_file(package_dir, name)
                if module is not None:
                    pending.append(module)
                # the parent packages' __init__ run on import too
                parts = name.split(".")
                for depth in range(1, len(parts)):
                    init = _module_file(package_dir, ".".join(parts[:depth]))
                    if init is not None and init.name == "__init__.py":
                        pending.append(init)
    return dict(sorted(found.items()))


def files_digest(files: Mapping[str, Path]) -> str:
    """sha256 over the sorted (path, sha256 of content) pairs."""
    outer = hashlib.sha256()
    for rel in sorted(files):
        outer.update(f"{rel}\0{hashlib.sha256(files[rel].read_bytes()).hexdigest()}\n".encode())
    return outer.hexdigest()


def stage_agent(files: Mapping[str, Path], tree: Path, dest: Path, runner: Runner) -> list[str]:
    """Copy the files to ``dest/provision/...`` with ``__pycache__`` compiled by the tree's python3.

    The compile runs in a chroot of ``tree`` on a copy under its ``/tmp`` (removed afterwards), so the
    bytecode and the recorded paths (``/opt/provision/...``) are the live environment's own. Returns the
    staged paths relative to ``dest``.
    """
    if dest.exists():
        shutil.rmtree(dest)
    for rel, source in files.items():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    inside = tree / "tmp" / f"provision-agent-{os.getpid()}"
    if inside.exists():
        shutil.rmtree(inside)
    shutil.copytree(dest, inside)
    try:
        argv = ["chroot", str(tree), "python3", "-m", "compileall", "-q", "-f", "--invalidation-mode"]
        argv += ["unchecked-hash", "-d", "/opt/provision/provision", f"/{inside.relative_to(tree)}/provision"]
        runner.run("agent", argv)
        for pyc in sorted(inside.rglob("*.pyc")):
            target = dest / pyc.relative_to(inside)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(pyc, target)
    finally:
        shutil.rmtree(inside, ignore_errors=True)
    return sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())


def required_sources(files: Iterable[str]) -> list[str]:
    """The agent entry points a build must contain (``__main__`` is optional: /init copes without it)."""
    wanted = ["provision/__init__.py", "provision/agent/__init__.py"]
    return [rel for rel in wanted if rel not in set(files)]
