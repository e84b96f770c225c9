"""Overlays: folders of files copied over an image's root file system, last (after packages and settings).

Their content is an input of the build (``tree_digest``): changing a file in an overlay rebuilds the image.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


def tree_digest(folders: list[Path]) -> str:
    """sha256 over the paths, modes, link targets and contents of every file of ``folders``, in order."""
    if not folders:
        return ""
    digest = hashlib.sha256()
    for i, folder in enumerate(folders):
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder).as_posix()
            st = os.lstat(path)
            digest.update(f"{i}\0{rel}\0{st.st_mode:o}\0".encode())
            if path.is_symlink():
                digest.update(str(path.readlink()).encode())
            elif path.is_file():
                digest.update(hashlib.sha256(path.read_bytes()).digest())
            digest.update(b"\n")
    return digest.hexdigest()


def apply_overlays(overlays: list[Path], root: Path) -> int:
    """Copy each overlay folder over the root tree (files keep their modes; owned by root). Files copied."""
    count = 0
    for overlay in overlays:
        for path in sorted(overlay.rglob("*")):
            target = root / path.relative_to(overlay)
            if path.is_dir() and not path.is_symlink():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or target.is_file():
                target.unlink()
            if path.is_symlink():
                target.symlink_to(path.readlink())
            else:
                shutil.copy2(path, target)
            count += 1
    return count
