"""Taking a backup while the server runs: the database through SQLite's online backup API, then the files."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from provision import __version__
from provision.backup.manifest import (
    DB_FILES,
    DB_NAME,
    FORMAT,
    MANIFEST,
    BackupError,
    FileEntry,
    Manifest,
    hash_file,
    mode_of,
    write_entry,
)
from provision.config import ServerConfig
from provision.images.files import TMP_PREFIX
from provision.store.base import BUSY_TIMEOUT

log = logging.getLogger(__name__)


def _uri(path: Path, mode: str) -> str:
    """SQLite's URI of ``path`` opened in ``mode``, quoted: a ``#`` or ``?`` in a folder's name is no fragment or
    query (``file:/srv/st#1/provision.db?mode=rw`` opened, and made, an empty ``/srv/st``)."""
    return f"{path.resolve().as_uri()}?mode={mode}"


def copy_database(source: Path, target: Path) -> int:
    """SQLite's online backup of ``source`` into a new ``target`` (one self-contained file, no WAL), checked with
    ``PRAGMA integrity_check``; returns its schema version. Writers of ``source`` go on meanwhile."""
    if not source.is_file():
        raise BackupError(f"{source}: no database (is this the state folder?)", path=str(source))
    try:
        src = sqlite3.connect(_uri(source, "rw"), uri=True, timeout=BUSY_TIMEOUT)
    except sqlite3.Error as exc:
        raise BackupError(f"{source}: the database cannot be opened: {exc}", path=str(source)) from None
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)  # every page in one step: one read transaction, so one consistent snapshot
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise BackupError(f"{source}: the database cannot be copied: {exc}", path=str(source)) from None
    finally:
        src.close()
    return check_database(target)


def check_database(path: Path) -> int:
    """``PRAGMA integrity_check`` of a database copy: its schema version, or BackupError with SQLite's findings."""
    try:
        db = sqlite3.connect(_uri(path, "ro"), uri=True)
    except sqlite3.Error as exc:
        raise BackupError(f"{path}: the database cannot be opened: {exc}", path=str(path)) from None
    try:
        found = [str(row[0]) for row in db.execute("PRAGMA integrity_check")]
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error as exc:
        raise BackupError(f"{path}: not a readable database: {exc}", path=str(path)) from None
    finally:
        db.close()
    if found != ["ok"]:
        raise BackupError(f"{path}: integrity check failed: {'; '.join(found[:5])}", path=str(path))
    return version


@dataclass
class _Taking:
    """One backup being written into ``work``."""

    work: Path
    dirs: dict[str, int] = field(default_factory=dict)
    files: list[FileEntry] = field(default_factory=list)

    def copy_file(self, source: Path, name: str) -> None:
        """``source`` into ``work/name`` with its mode, hashed while copied (a file gone meanwhile: skipped)."""
        target = self.work / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with source.open("rb") as src:
                mode = stat.S_IMODE(os.fstat(src.fileno()).st_mode)
                self.files.append(write_entry(src, target, mode, name))
        except FileNotFoundError:
            log.warning("backup: %s went away while the backup was taken: not saved", source)

    def copy_tree(self, source: Path, root: str, skip: set[Path]) -> None:
        """Every regular file and folder under ``source`` (but ``skip`` and the database's files) into ``root``."""
        self.dirs[root] = mode_of(source)
        for folder, subdirs, names in os.walk(source):
            here = Path(folder)
            subdirs[:] = sorted(d for d in subdirs if here / d not in skip and not (here / d).is_symlink())
            for d in subdirs:
                self.dirs[f"{root}/{(here / d).relative_to(source)}"] = mode_of(here / d)
            for name in sorted(names):
                path = here / name
                if (
                    path in skip
                    or name.startswith(TMP_PREFIX)
                    or (here == source and root == "state" and name in DB_FILES)
                ):
                    continue
                try:
                    kind = path.lstat().st_mode
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(kind):  # sockets (gpg-agent's), FIFOs, symlinks: not state
                    self.copy_file(path, f"{root}/{path.relative_to(source)}")


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def take_backup(config: ServerConfig, dest: Path, *, config_file: Path | None = None,
                with_images: bool = False) -> Manifest:  # fmt: skip
    """Back up the state of ``config`` (and the file ``config_file``) into ``dest``, a folder that must not exist
    yet (or be empty). Safe while the server runs. Written aside, renamed into place once whole."""
    state = config.state_dir
    if not state.is_dir():
        raise BackupError(f"{state}: no state folder", path=str(state))
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(f"{dest}: exists and is not empty: a backup goes into a new folder", path=str(dest))
    work = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    work.mkdir(mode=0o700, parents=True)
    try:
        manifest = _take(config, work, config_file, with_images)
        (work / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
        if dest.exists():
            dest.rmdir()
        work.rename(dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log.info("backup of %s into %s: %d files, %d bytes, schema %d", state, dest, len(manifest.files),
             manifest.size, manifest.schema_version)  # fmt: skip
    return manifest


def _take(config: ServerConfig, work: Path, config_file: Path | None, with_images: bool) -> Manifest:
    state = config.state_dir.resolve()
    taking = _Taking(work)
    roots = {"state": str(state)}
    (work / "state").mkdir()
    db = work / "state" / DB_NAME
    schema = copy_database(state / DB_NAME, db)
    db.chmod(mode_of(state / DB_NAME))
    size, sha = hash_file(db)
    taking.files.append(FileEntry(f"state/{DB_NAME}", size, mode_of(db), sha))
    skip = {p.resolve() for p in (config.repo_path, config.boot_root) if _inside(p, state)}
    if not with_images and _inside(config.images_dir, state):
        skip.add(config.images_dir.resolve())
    taking.copy_tree(state, "state", skip)
    if with_images and config.images_dir.is_dir() and not _inside(config.images_dir, state):
        roots["images"] = str(config.images_dir.resolve())
        taking.copy_tree(config.images_dir.resolve(), "images", set())
    outside = {"config": config_file, "ssh_key": config.ssh_key_path, "certificates_key": config.certificates_key_path}
    for root, path in outside.items():
        if path is None or _inside(path, state):
            continue
        if not path.is_file():
            if root == "config":
                raise BackupError(f"{path}: the configuration file cannot be read", path=str(path))
            continue  # a key not made yet
        resolved = path.resolve()  # a symlinked file goes back where its contents were, under its own name
        roots[root] = str(resolved)
        taking.dirs[root] = 0o700
        taking.copy_file(path, f"{root}/{resolved.name}")
        public = path.with_name(f"{path.name}.pub")
        if root == "ssh_key" and public.is_file():
            taking.copy_file(public, f"{root}/{resolved.name}.pub")
    created = datetime.now(UTC).isoformat(timespec="seconds")
    return Manifest(FORMAT, __version__, created, schema, with_images, roots, taking.dirs, taking.files)


DATED_PREFIX = "provision-"


def dated_folder(parent: Path, now: datetime | None = None) -> Path:
    """``parent/provision-YYYYMMDDTHHMMSSZ``: a new backup's folder named by its time (UTC), for timers."""
    return parent / f"{DATED_PREFIX}{(now or datetime.now(UTC)):%Y%m%dT%H%M%SZ}"


def prune_backups(parent: Path, keep: int) -> list[Path]:
    """Remove the dated backups of ``parent`` but the ``keep`` newest (only whole ones: folders named by
    ``dated_folder`` holding a manifest; nothing else is touched). Returns the removed folders."""
    if keep < 1:
        raise BackupError(f"keep {keep}: at least the newest backup is kept", keep=keep)
    dated = sorted(
        p
        for p in parent.iterdir()
        if p.name.startswith(DATED_PREFIX) and not p.is_symlink() and p.is_dir() and (p / MANIFEST).is_file()
    )  # a symlink named like a backup is not ours to remove (and rmtree refuses it)
    removed = dated[:-keep]
    for folder in removed:
        shutil.rmtree(folder)
        log.info("backup %s removed: %d newer backups are kept", folder, keep)
    return removed
