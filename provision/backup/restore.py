"""Restoring a backup folder: checked whole before anything is written, into an empty state folder."""

from __future__ import annotations

import logging
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from provision.backup.manifest import (
    DB_FILES,
    DB_NAME,
    FILE_ROOTS,
    BackupError,
    FileEntry,
    Manifest,
    hash_file,
    read_manifest,
    write_entry,
)
from provision.backup.take import check_database
from provision.store.schema import MIGRATIONS

log = logging.getLogger(__name__)

PERMISSIONS = 0o777  # what restore gives a file or folder of the manifest's mode: never setuid, setgid or sticky


@dataclass
class Restored:
    """What a restore did: the files written, those outside the state folder already there and identical."""

    manifest: Manifest
    state_dir: Path
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    config_file: Path | None = None


def verify_backup(folder: Path) -> Manifest:
    """The manifest, once every file it lists is in ``folder`` with its size and sha256 (BackupError naming every
    file that is not)."""
    manifest = read_manifest(folder)
    bad = []
    for entry in manifest.files:
        path = folder / entry.path
        try:
            size, sha = hash_file(path)
        except OSError as exc:
            bad.append(f"{entry.path}: cannot be read ({exc.strerror or exc})")
            continue
        if (size, sha) != (entry.size, entry.sha256):
            bad.append(f"{entry.path}: {size} bytes, sha256 {sha[:16]}..., the manifest says {entry.size} bytes, "
                       f"sha256 {entry.sha256[:16]}...")  # fmt: skip
    if bad:
        raise BackupError(f"{folder}: {len(bad)} file(s) differ from the manifest: " + "; ".join(bad), files=bad)
    return manifest


def target_of(entry: str, manifest: Manifest, state_dir: Path, config_to: Path | None = None) -> Path:
    """Where a backed-up file goes: ``state/...`` into ``state_dir``, the configuration to ``config_to`` if
    given, anything else back where it was (the manifest's roots)."""
    root, _, rel = entry.partition("/")
    if root == "state":
        return state_dir / rel
    if root == "config" and config_to is not None:
        return config_to
    original = manifest.roots.get(root)
    if original is None:
        raise BackupError(f"{entry}: the manifest names no root {root!r}", path=entry)
    return Path(original).parent / rel if root in FILE_ROOTS else Path(original) / rel


def restore_backup(folder: Path, state_dir: Path, *, config_to: Path | None = None, force: bool = False) -> Restored:
    """Restore ``folder`` into ``state_dir`` (empty or absent, unless ``force``) and the files that were outside
    it back where they were. Nothing is written unless every check passes. Stop the server first."""
    manifest = verify_backup(folder)
    if f"state/{DB_NAME}" not in {f.path for f in manifest.files}:
        raise BackupError(f"{folder}: the manifest lists no state/{DB_NAME}: not a backup of a server's state",
                          path=str(folder))  # fmt: skip
    version = check_database(folder / "state" / DB_NAME)  # before anything is written, as the schema check
    if version != manifest.schema_version:
        raise BackupError(f"{folder}: its database has schema version {version}, the manifest says "
                          f"{manifest.schema_version}", path=str(folder))  # fmt: skip
    if manifest.schema_version > len(MIGRATIONS):
        raise BackupError(f"{folder}: its database has schema version {manifest.schema_version}; this provision "
                          f"knows {len(MIGRATIONS)}: restore it with a newer provision", path=str(folder))  # fmt: skip
    if state_dir.exists() and (not state_dir.is_dir() or any(state_dir.iterdir())) and not force:
        raise BackupError(f"{state_dir}: not empty: restore into a new state folder, or add --force to write over "
                          "it (stop the server first)", path=str(state_dir))  # fmt: skip
    _not_in_use(state_dir / DB_NAME)
    plan = [(entry, target_of(entry.path, manifest, state_dir, config_to)) for entry in manifest.files]
    done = Restored(manifest, state_dir, config_file=next((t for e, t in plan if e.path.startswith("config/")), None))
    conflicts = []
    for entry, target in plan:
        if entry.path.startswith("state/") or not target.exists():
            continue
        if hash_file(target)[1] == entry.sha256:
            done.kept.append(target)
        elif not force:
            conflicts.append(str(target))
    if conflicts:
        raise BackupError(f"{len(conflicts)} file(s) outside the state folder exist with other contents: "
                          f"{', '.join(conflicts)} (--force writes over them)", files=conflicts)  # fmt: skip
    _make_dirs(manifest, state_dir)
    for name in DB_FILES:  # a WAL of another database next to the restored one would be replayed into it
        (state_dir / name).unlink(missing_ok=True)
    for entry, target in plan:
        if target in done.kept:
            continue
        _restore_file(folder, entry, target)
        done.written.append(target)
    check_database(state_dir / DB_NAME)
    log.info("restored %s into %s: %d files written, %d kept", folder, state_dir, len(done.written), len(done.kept))
    return done


def _not_in_use(db: Path) -> None:
    """BackupError when a process has the database ``db`` open (a server still running: ``--force`` would
    remove its WAL under it). Every open connection of a WAL database keeps another from taking it in
    exclusive locking mode; this connection only reads, and lets go at once."""
    if not db.exists():
        return
    try:
        conn = sqlite3.connect(db, timeout=0)
    except sqlite3.Error as exc:
        raise BackupError(f"{db}: cannot be opened to check it is not in use: {exc}", path=str(db)) from None
    try:
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("PRAGMA user_version").fetchone()
    except sqlite3.OperationalError as exc:
        raise BackupError(f"{db}: in use ({exc}): stop the server first (systemctl stop provision)",
                          path=str(db)) from None  # fmt: skip
    except sqlite3.DatabaseError:
        pass  # not a database (what --force writes over): nobody serves it
    finally:
        conn.close()


def _make_dirs(manifest: Manifest, state_dir: Path) -> None:
    for path, mode in sorted(manifest.dirs.items()):
        root, _, rel = path.partition("/")
        if root != "state":
            continue
        folder = state_dir / rel if rel else state_dir
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder.chmod(mode & PERMISSIONS)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)


def _restore_file(folder: Path, entry: FileEntry, target: Path) -> None:
    """One file, through a temporary sibling renamed over the target, checked against the manifest again."""
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = target.with_name(f".{target.name}.restore-{os.getpid()}")
    partial.unlink(missing_ok=True)
    try:
        with (folder / entry.path).open("rb") as src:
            written = write_entry(src, partial, entry.mode & PERMISSIONS, entry.path)
        if written.sha256 != entry.sha256:
            raise BackupError(f"{entry.path}: changed while it was restored", path=entry.path)
        partial.replace(target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
