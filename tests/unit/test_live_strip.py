"""Strip rules of the live environment: what goes, what must stay (above all what the agent imports)."""

from __future__ import annotations

import os
import sys

import pytest

from provision.live import payload
from provision.live.strip import matches, remove_orphan_pyc, strip_tree, stripped
from tests.support.files import write_tree

PY = "usr/lib/python3.11"


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("usr/share/doc/**", "usr/share/doc", True),  # X/** matches X itself
        ("usr/share/doc/**", "usr/share/doc/bash/README.gz", True),
        ("usr/share/doc/**", "usr/share/docs", False),
        ("usr/share/doc/*/copyright", "usr/share/doc/bash/copyright", True),
        ("usr/share/doc/*/copyright", "usr/share/doc/bash/x/copyright", False),  # * stays in one segment
        ("usr/lib/python3.*/test/**", f"{PY}/test/support/__init__.py", True),
        ("usr/lib/python3.*/test/**", "usr/lib/python3/dist-packages/test/x.py", False),
        ("usr/lib/python3.*/**/tests/**", f"{PY}/ctypes/tests/a.py", True),
        ("usr/lib/python3.*/**/tests/**", f"{PY}/tests/a.py", True),  # ** matches zero segments
        ("usr/lib/python3.*/**/tests/**", f"{PY}/contests.py", False),
        ("**/__pycache__/*.opt-1.pyc", f"{PY}/__pycache__/os.cpython-311.opt-1.pyc", True),
        ("var/log/*", "var/log", False),  # the folder itself stays
        ("var/log/*", "var/log/dpkg.log", True),
    ],
)
def test_pattern_semantics(pattern, path, expected):
    assert matches(path, pattern) is expected


@pytest.mark.parametrize(
    "path",
    [
        "usr/share/doc/bash/README.gz",
        "usr/share/doc/python3.11/changelog.Debian.gz",
        "usr/share/man/man1/ls.1.gz",
        "usr/share/locale/fr/LC_MESSAGES/coreutils.mo",
        "usr/share/info/grep.info.gz",
        "usr/share/lintian/overrides/bash",
        "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease",
        "var/cache/apt/archives/python3_3.11.2-1+b1_amd64.deb",
        "var/cache/apt/pkgcache.bin",
        "var/cache/debconf/templates.dat",
        "var/lib/dpkg/info/bash.list",
        "var/log/dpkg.log",
        "usr/bin/perl",
        "usr/bin/perl5.36.0",
        "usr/lib/x86_64-linux-gnu/perl-base/strict.pm",
        "usr/share/perl5/Debconf/Config.pm",
        "usr/lib/x86_64-linux-gnu/gconv/UTF-16.so",
        f"{PY}/test/support/__init__.py",
        f"{PY}/idlelib/idle.py",
        f"{PY}/tkinter/__init__.py",
        f"{PY}/turtledemo/clock.py",
        f"{PY}/turtle.py",
        f"{PY}/ensurepip/__init__.py",
        f"{PY}/lib2to3/main.py",
        f"{PY}/pydoc_data/topics.py",
        f"{PY}/lib-dynload/_testcapi.cpython-311-x86_64-linux-gnu.so",
        f"{PY}/lib-dynload/_ctypes_test.cpython-311-x86_64-linux-gnu.so",
        f"{PY}/lib-dynload/xxlimited.cpython-311-x86_64-linux-gnu.so",
        "usr/lib/python3/dist-packages/zstandard/tests/test_x.py",
        f"{PY}/__pycache__/os.cpython-311.opt-2.pyc",
    ],
)
def test_removed(path):
    assert stripped(path), path


@pytest.mark.parametrize(
    "path",
    [
        "usr/share/doc/bash/copyright",
        "usr/lib/locale/C.utf8/LC_CTYPE",
        "usr/share/misc/pci.ids",
        "usr/share/smartmontools/drivedb.h",
        "usr/share/ca-certificates/mozilla/ISRG_Root_X1.crt",
        "etc/ssl/certs/ca-certificates.crt",
        "var/lib/dpkg/status",
        "var/log",
        "usr/bin/python3.11",
        "usr/bin/busybox",
        "usr/sbin/dropbear",
        "usr/lib/x86_64-linux-gnu/libssl.so.3",
        "usr/lib/x86_64-linux-gnu/libc.so.6",
        f"{PY}/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so",
        f"{PY}/lib-dynload/_ctypes.cpython-311-x86_64-linux-gnu.so",
        f"{PY}/lib-dynload/_uuid.cpython-311-x86_64-linux-gnu.so",
        f"{PY}/lib-dynload/mmap.cpython-311-x86_64-linux-gnu.so",
        f"{PY}/lib-dynload/_json.cpython-311-x86_64-linux-gnu.so",
        f"{PY}/__pycache__/os.cpython-311.pyc",
        f"{PY}/email/parser.py",  # http.client needs it
        f"{PY}/http/client.py",
        f"{PY}/unittest/__init__.py",
        f"{PY}/sqlite3/__init__.py",
        f"{PY}/concurrent/futures/thread.py",
        f"{PY}/multiprocessing/__init__.py",
        f"{PY}/asyncio/__init__.py",
        f"{PY}/xml/etree/ElementTree.py",
        f"{PY}/contest.py",
        "usr/lib/python3/dist-packages/requests/__init__.py",
        "usr/lib/python3/dist-packages/urllib3/util/ssl_.py",
        "usr/lib/python3/dist-packages/zstandard/__init__.py",
        "usr/lib/python3/dist-packages/charset_normalizer/api.py",
    ],
)
def test_kept(path):
    assert not stripped(path), path


def _stdlib_candidates(module: str) -> list[str]:
    parts = module.split(".")
    base = f"{PY}/" + "/".join(parts)
    return [f"{base}.py", f"{base}/__init__.py"]


def test_nothing_the_agent_imports_from_the_standard_library_is_stripped():
    """Every stdlib module named by an import of the agent's files (and its parents) stays."""
    imported: set[str] = set()
    for path in payload.agent_files().values():
        imported.update(name for name in payload._imports(path, "provision.agent") if name.split(".")[0] != "provision")
    stdlib = {name for name in imported if name.split(".")[0] in sys.stdlib_module_names}
    assert {"json", "hashlib", "threading", "subprocess"} <= stdlib
    for name in sorted(stdlib):
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            for candidate in _stdlib_candidates(".".join(parts[:depth])):
                assert not stripped(candidate), f"{candidate} (imported by the agent as {name})"


@pytest.mark.parametrize(
    "module",
    [
        "json", "logging", "subprocess", "threading", "queue", "hashlib", "struct", "fcntl", "ctypes", "argparse",
        "dataclasses", "pathlib", "urllib.parse", "urllib.request", "ssl", "http.client", "http.cookiejar",
        "concurrent.futures", "signal", "socket", "enum", "typing", "email.parser", "uuid", "random", "selectors",
    ],
)  # fmt: skip
def test_the_modules_the_brief_names_stay(module):
    for candidate in _stdlib_candidates(module):
        assert not stripped(candidate), candidate


def test_strip_tree_removes_files_and_emptied_folders_only(tmp_path):
    root = tmp_path / "tree"
    outside = tmp_path / "outside"
    write_tree(outside, {"keep.txt": "outside the tree"})
    write_tree(
        root,
        {
            "usr/share/doc/bash/README": "readme",
            "usr/share/doc/bash/copyright": "GPL",
            "usr/share/doc/dash/changelog.gz": "log",
            "usr/share/man/man1/ls.1.gz": "man",
            f"{PY}/json/__init__.py": "",
            f"{PY}/test/support/__init__.py": "",
            f"{PY}/pydoc_data/topics.py": "",
            f"{PY}/__pycache__/turtle.cpython-311.pyc": "orphan after turtle.py goes",
            f"{PY}/turtle.py": "",
            f"{PY}/__pycache__/json.cpython-311.pyc": "orphan: json is a package, json.py never existed",
            f"{PY}/json/__pycache__/__init__.cpython-311.pyc": "kept",
            "var/log/dpkg.log": "log",
        },
    )
    (root / "usr/share/locale").mkdir(parents=True)
    (root / "usr/share/locale/link").symlink_to(outside)  # a matched symlink is removed, never followed
    stats = strip_tree(root)
    left = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir() or p.is_symlink())
    assert left == [
        f"{PY}/json/__init__.py",
        f"{PY}/json/__pycache__/__init__.cpython-311.pyc",
        "usr/share/doc/bash/copyright",
    ]
    assert (outside / "keep.txt").read_text() == "outside the tree"
    assert not (root / "usr/share/man").exists() and not (root / "usr/share/locale").exists()
    assert not (root / "usr/share/doc/dash").exists()
    assert (root / "var/log").is_dir()  # emptied, kept
    assert stats.files == 8 and stats.orphan_pyc == 2
    assert stats.bytes > 0 and stats.dirs >= 5
    assert stats.to_dict()["files"] == 8


def test_orphan_pyc_removal_keeps_pyc_with_source(tmp_path):
    cache = tmp_path / "pkg" / "__pycache__"
    cache.mkdir(parents=True)
    (tmp_path / "pkg" / "a.py").write_text("")
    for name in ("a.cpython-311.pyc", "b.cpython-311.pyc", "a.cpython-311.opt-1.pyc", "notes.txt"):
        (cache / name).write_text("")
    assert remove_orphan_pyc(tmp_path) == 1
    assert sorted(os.listdir(cache)) == ["a.cpython-311.opt-1.pyc", "a.cpython-311.pyc", "notes.txt"]
