"""The backup folder's manifest: the format, provision's version, the time, the database's schema version, each
root's original path, every folder (mode) and file (path, size, mode, sha256); and hashing files into entries."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from provision.errors import FatalError

FORMAT = 1
MANIFEST = "manifest.json"
DB_NAME = "provision.db"
DB_FILES = {DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", f"{DB_NAME}-journal"}
BLOCK = 1 << 20
FILE_ROOTS = (
    "config",
    "ssh_key",
    "certificates_key",
)  # roots that are one file (and the SSH key its .pub), not a folder
ROOTS = ("state", "images", *FILE_ROOTS)  # every root a backup makes (provision.backup.take)


class BackupError(FatalError):
    """A backup that cannot be taken, or a backup folder that cannot be restored (every fact named)."""


@dataclass(frozen=True)
class FileEntry:
    path: str  # in the backup: ROOT/relative path
    size: int
    mode: int  # permission bits
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "mode": f"{self.mode:04o}", "sha256": self.sha256}


@dataclass(frozen=True)
class Manifest:
    format: int
    provision: str
    created: str
    schema_version: int
    with_images: bool
    roots: dict[str, str]  # root name -> its original absolute path
    dirs: dict[str, int]  # ROOT/relative folder -> permission bits
    files: list[FileEntry]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> str:
        data = {
            "format": self.format, "provision": self.provision, "created": self.created,
            "schema_version": self.schema_version, "with_images": self.with_images, "roots": self.roots,
            "dirs": {path: f"{mode:04o}" for path, mode in self.dirs.items()},
            "files": [f.to_dict() for f in self.files],
        }  # fmt: skip
        return json.dumps(data, indent=2) + "\n"


def read_manifest(folder: Path) -> Manifest:
    """The manifest of a backup folder, checked field by field (BackupError naming the first wrong one)."""
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackupError(f"{path}: no manifest: not a backup folder (or an unfinished one)", path=str(path)) from None
    except (OSError, ValueError) as exc:
        raise BackupError(f"{path}: cannot be read: {exc}", path=str(path)) from None
    try:
        if data["format"] != FORMAT:
            raise BackupError(f"{path}: format {data['format']!r}; this provision reads format {FORMAT}")
        files = [FileEntry(_relative(f["path"]), int(f["size"]), int(f["mode"], 8), str(f["sha256"]))
                 for f in data["files"]]  # fmt: skip
        dirs = {_relative(p, 1): int(mode, 8) for p, mode in data["dirs"].items()}
        roots = {str(k): str(v) for k, v in data["roots"].items()}
        _check_roots(roots, [f.path for f in files], list(dirs))
        return Manifest(int(data["format"]), str(data["provision"]), str(data["created"]),
                        int(data["schema_version"]), bool(data["with_images"]), roots, dirs, files)  # fmt: skip
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BackupError(f"{path}: not a backup manifest ({type(exc).__name__}: {exc})", path=str(path)) from None


def _check_roots(roots: dict[str, str], files: list[str], dirs: list[str]) -> None:
    """ValueError unless every root is one a backup makes, at an absolute path, and every file and folder is
    under one of them; a one-file root (``FILE_ROOTS``) holds only its file (and the SSH key its ``.pub``).
    Restore writes a root's files back at its path: a made-up root or a deeper path would write anywhere."""
    for name, where in roots.items():
        if name not in ROOTS or not Path(where).is_absolute():
            raise ValueError(f"root {name!r} at {where!r} is none of {', '.join(ROOTS)} at an absolute path")
    for path in [*files, *dirs]:
        root, _, rel = path.partition("/")
        if root not in roots:
            raise ValueError(f"path {path!r} is under no root of the manifest")
        if rel and root in FILE_ROOTS:
            name = Path(roots[root]).name
            if rel not in (name, *((f"{name}.pub",) if root == "ssh_key" else ())):
                raise ValueError(f"path {path!r}: the root {root!r} holds only {name}")


def _relative(path: str, parts_at_least: int = 2) -> str:
    """A manifest path: relative, ROOT/... (never ``..``), or ValueError."""
    parts = Path(path).parts
    if not parts or Path(path).is_absolute() or ".." in parts or len(parts) < parts_at_least:
        raise ValueError(f"path {path!r} is not ROOT/relative")
    return path


def write_entry(src: BinaryIO, target: Path, mode: int, name: str) -> FileEntry:
    """``src`` copied into a new file ``target`` with ``mode``, hashed on the way: its manifest entry ``name``."""
    digest = hashlib.sha256()
    size = 0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as dst:
        while block := src.read(BLOCK):
            digest.update(block)
            dst.write(block)
            size += len(block)
        dst.flush()
        os.fsync(dst.fileno())
        os.fchmod(dst.fileno(), mode)
    return FileEntry(name, size, mode, digest.hexdigest())


def hash_file(path: Path) -> tuple[int, str]:
    """(size, sha256) of a file."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as src:
        while block := src.read(BLOCK):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)
