"""Backups of a server's state, taken while it serves, and their restore into a fresh state folder (docs/backup.md).

A backup is a folder: ``manifest.json`` and one sub-folder per *root* it saved:

- ``state/``: the state folder (``state_dir``): ``provision.db`` copied with SQLite's online backup API (one
  consistent snapshot, taken while the server keeps writing: WAL readers never block writers), then every other
  regular file with its mode (the keys ``secrets/server.key``, ``keys/certificates_ed25519``, ``ssh/id_ed25519``,
  the bundles' gpg home ``secrets/repo-gnupg/``, ``leases.json``, ``probes/`` ...). Left out: the database's own
  ``-wal``/``-shm`` files, sockets (gpg-agent's), and what is large and made again by provision itself: the image
  store (unless ``with_images``), the bundles' repository (``provision bundles sync``) and the boot root
  (``provision live build``) when they are inside the state folder;
- ``config/``: the configuration file; ``ssh_key/``, ``certificates_key/``: keys configured outside the state
  folder; ``images/``: an image store outside it (``with_images``).

The manifest names the format, provision's version, the time, the schema version of the database, each root's
original path, and every file (path, size, mode, sha256) and folder (mode). A backup is written in a hidden
sibling folder and renamed into place once whole: a folder named DIR is always a complete backup. Before it is
declared good, ``PRAGMA integrity_check`` runs on the copied database.

``restore`` checks the manifest (only the roots a backup makes, each file under one), every file's sha256 and the
backed-up database (integrity, its schema version the manifest's) before it writes anything; refuses a state
folder that is not empty (unless ``force``), a database still open (a server running, even with ``force``) and
a file outside it that exists with other contents (unless ``force``); then writes every file with its mode (no
setuid, setgid or sticky bit; through a temporary file, renamed), and checks the restored database again.
"""

from provision.backup.manifest import MANIFEST, BackupError, FileEntry, Manifest, read_manifest
from provision.backup.restore import Restored, restore_backup, target_of, verify_backup
from provision.backup.take import check_database, copy_database, dated_folder, prune_backups, take_backup

__all__ = [
    "MANIFEST", "BackupError", "FileEntry", "Manifest", "Restored", "check_database", "copy_database",
    "dated_folder", "prune_backups", "read_manifest", "restore_backup", "take_backup", "target_of", "verify_backup",
]  # fmt: skip
