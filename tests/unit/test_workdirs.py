"""Working folders under world-writable places are private: made 0700, and an existing one that another user
could have prepared (a symlink, someone else's, writable by others) is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from provision.workdirs import UnsafeWorkdir, private_dir


def test_made_private(tmp_path: Path) -> None:
    work = private_dir(tmp_path / "a" / "work")
    assert work.is_dir() and (work.stat().st_mode & 0o777) == 0o700
    assert private_dir(work) == work  # again: accepted


def test_a_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (tmp_path / "work").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafeWorkdir, match="not a folder"):
        private_dir(tmp_path / "work")


def test_writable_by_others_is_refused(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    work.chmod(0o777)
    with pytest.raises(UnsafeWorkdir, match="writable by others"):
        private_dir(work)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the folder to another user")
def test_another_users_folder_is_refused(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    os.chown(work, 65534, 65534)
    with pytest.raises(UnsafeWorkdir, match="belongs to uid 65534"):
        private_dir(work)
