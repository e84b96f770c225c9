"""The hooks a server knows: every hook file of the built-in folder (``hooks/`` of provision) and of the site's.

A folder's hooks are its regular files, but for hidden files (``.name``), backups (``name~``) and
documentation (``*.md``, ``*.txt``, ``*.rst``); sub-folders are left alone (a hook may keep its data there).
Each hook file must:

- be executable (the runner executes it: its ``#!`` line names the interpreter);
- be UTF-8 text of at most provision.wire.hooks.MAX_SCRIPT bytes (it travels as the HookJob's script);
- hold a valid header (provision.hooks.header) whose ``name`` is the file's name, without an extension
  (``label`` or ``label.py``);
- have a name no other hook of the catalog has: a site hook cannot silently replace a built-in one.

Every problem of every folder is collected, as ``FILE:LINE: key: message``; a file with problems is not in
the catalog.
"""

from __future__ import annotations

import logging
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from provision.errors import ConfigError, Problem
from provision.hooks.header import Header, parse
from provision.resources import data_dir
from provision.wire.hooks import MAX_SCRIPT

log = logging.getLogger(__name__)

_NOT_HOOKS = (".md", ".txt", ".rst", "~")


@dataclass(frozen=True)
class HookFile:
    """One hook: its header, its file, and the text that was checked (what the runner is sent)."""

    header: Header
    path: Path
    script: str
    line: int  # the line of the header's ``name``
    lines: dict[str, int]  # the line of each top-level header key

    @property
    def name(self) -> str:
        return self.header.name

    def line_of(self, key: str) -> int:
        return self.lines.get(key, self.line)


@dataclass(frozen=True)
class Catalog:
    """Hooks by name, and the folders they came from (built-in first)."""

    folders: tuple[str, ...]
    hooks: tuple[HookFile, ...]

    def get(self, name: str) -> HookFile | None:
        return next((h for h in self.hooks if h.name == name), None)

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.hooks]

    def __contains__(self, name: object) -> bool:
        return any(h.name == name for h in self.hooks)


def builtin_dir() -> Path:
    """The hooks provision ships: hooks/ of the checkout, or the installed package data."""
    return data_dir("hooks")


def default_folders(site: Path | None = None) -> list[Path]:
    """The built-in folder, then the site's (when one is configured)."""
    return [builtin_dir()] if site is None else [builtin_dir(), site]


def hook_files(folder: Path) -> list[Path]:
    """The files of ``folder`` that are hooks (see the module docstring), sorted by name."""
    found = []
    for path in folder.iterdir():
        if path.name.startswith(".") or path.name.endswith(_NOT_HOOKS) or not path.is_file():
            continue
        found.append(path)
    return sorted(found)


def load_hook(path: Path, display: str | None = None) -> tuple[HookFile | None, list[Problem]]:
    """One hook file checked (never raises: problems are returned)."""
    file = display or str(path)
    try:
        info = path.stat()
        if info.st_size > MAX_SCRIPT:
            return None, [Problem(file, None, "", f"file is {info.st_size} bytes; a hook is at most {MAX_SCRIPT}")]
        data = path.read_bytes()
    except OSError as exc:
        return None, [Problem(file, None, "", f"cannot read: {exc.strerror or exc}")]
    problems = []
    if not info.st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
        problems.append(Problem(file, None, "", f"not executable (chmod +x {file})"))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return None, [*problems, Problem(file, line, "", f"not UTF-8 text (byte {exc.start})")]
    header, doc, found = parse(text, file)
    problems.extend(found)
    if header is None or doc is None:
        return None, problems
    lines = {key: doc.line_of((key,)) or 1 for key in doc.data}
    name_line = lines.get("name", 1)
    stem = path.name.split(".", 1)[0]
    if header.name != stem:
        message = f"{header.name!r} differs from the file's name {path.name!r}: a hook is named after its file"
        problems.append(Problem(file, name_line, "name", message))
    if problems:
        return None, problems
    return HookFile(header, path, text, name_line, lines), []


def check_folders(folders: Iterable[Path]) -> tuple[Catalog, list[Problem]]:
    """The valid hooks of every folder (in order: built-in first), and the problems of the others."""
    hooks: list[HookFile] = []
    problems: list[Problem] = []
    shown: list[str] = []
    for folder in folders:
        shown.append(str(folder))
        if not folder.is_dir():
            problems.append(Problem(str(folder), None, "", "not a directory"))
            continue
        try:
            paths = hook_files(folder)
        except OSError as exc:
            problems.append(Problem(str(folder), None, "", f"cannot list: {exc.strerror or exc}"))
            continue
        for path in paths:
            hook, found = load_hook(path)
            problems.extend(found)
            if hook is None:
                continue
            first = next((h for h in hooks if h.name == hook.name), None)
            if first is not None:
                message = f"hook {hook.name!r} is already defined in {first.path}:{first.line}"
                problems.append(Problem(str(path), hook.line, "name", message))
                continue
            hooks.append(hook)
    log.debug("%d hooks from %s, %d problems", len(hooks), ", ".join(shown), len(problems))
    return Catalog(tuple(shown), tuple(hooks)), problems


def load_catalog(folders: Sequence[Path] | None = None) -> Catalog:
    """The catalog of ``folders`` (default: the built-in hooks); any problem raises ConfigError with all."""
    catalog, problems = check_folders(folders if folders is not None else default_folders())
    if problems:
        raise ConfigError(problems)
    return catalog
