"""`provision backup DIR` and `provision restore DIR` (docs/backup.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TextIO

from provision.cli.common import DEFAULT_STATE, UsageError

MiB = 1 << 20


def cmd_backup(args: argparse.Namespace, out: TextIO) -> int:
    import time

    from provision.backup import dated_folder, prune_backups, take_backup
    from provision.config import load_config

    if args.keep is not None and not args.dated:
        raise UsageError("--keep removes older dated backups: it goes with --dated")
    config_file = Path(args.config) if args.config else None
    config = load_config(config_file, {"state_dir": args.state_dir} if args.state_dir else None)
    dest = dated_folder(Path(args.dir)) if args.dated else Path(args.dir)
    started = time.monotonic()
    manifest = take_backup(config, dest, config_file=config_file, with_images=args.with_images)
    seconds = time.monotonic() - started
    out.write(
        f"{dest}: backup of {config.state_dir}: {len(manifest.files)} files, {manifest.size / MiB:.1f} MiB, "
        f"database schema {manifest.schema_version}, integrity ok, {seconds:.1f} s"
        f"{'' if manifest.with_images else '; images not included'}\n"
    )
    if args.keep is not None:
        for folder in prune_backups(Path(args.dir), args.keep):
            out.write(f"{folder}: removed (older than the {args.keep} kept)\n")
    return 0


def cmd_restore(args: argparse.Namespace, out: TextIO) -> int:
    from provision.backup import read_manifest, restore_backup

    folder = Path(args.dir)
    state = Path(args.state_dir) if args.state_dir else Path(read_manifest(folder).roots.get("state", DEFAULT_STATE))
    done = restore_backup(folder, state, config_to=Path(args.config) if args.config else None, force=args.force)
    manifest = done.manifest
    out.write(
        f"{folder}: restored into {state}: {len(done.written)} files written"
        f"{f', {len(done.kept)} already there and identical' if done.kept else ''}; database schema "
        f"{manifest.schema_version}, integrity ok (backup of {manifest.created}, provision {manifest.provision})\n"
    )
    if done.config_file is not None:
        out.write(f"configuration: {done.config_file} (its state_dir: serve with --state-dir {state} if it differs)\n")
    if not manifest.with_images:
        out.write("images were not in the backup: restore the image store separately (docs/backup.md)\n")
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "backup",
        help="back up the state (database, keys, configuration) into a new folder, while the server runs",
        description="Copy the server's database with SQLite's online backup API (safe while it serves), its keys "
        "and state files with their modes, and the configuration file into DIR, with a manifest of sha256s; "
        "the copied database passes PRAGMA integrity_check before the backup is declared good. Images are left "
        "out unless --with-images (docs/backup.md).",
    )
    p.add_argument("dir", metavar="DIR", help="the backup folder to make (must not exist, or be empty; see --dated)")
    p.add_argument("--config", metavar="FILE", help="the server's YAML configuration (backed up too)")
    p.add_argument("--state-dir", metavar="DIR", help=f"the state folder (default: the config's, else {DEFAULT_STATE})")
    p.add_argument("--with-images", action="store_true", help="include the image store (large: rebuildable)")
    p.add_argument("--dated", action="store_true", help="DIR is a parent: back up into DIR/provision-UTCTIME")
    p.add_argument("--keep", type=int, metavar="N", help="with --dated: then remove all but the N newest backups")
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser(
        "restore",
        help="restore a backup into a fresh state folder (stop the server first)",
        description="Check every file of the backup against its manifest, then write the state into an empty "
        "state folder (refused if not empty, unless --force) and the files that were outside it (configuration, "
        "keys) back where they were; the restored database passes PRAGMA integrity_check.",
    )
    p.add_argument("dir", metavar="DIR", help="the backup folder")
    p.add_argument("--state-dir", metavar="DIR", help="where to restore the state (default: where it was backed up)")
    p.add_argument("--config", metavar="FILE", help="where to write the configuration file (default: where it was)")
    p.add_argument("--force", action="store_true", help="write over a non-empty state folder and differing files")
    p.set_defaults(func=cmd_restore)
