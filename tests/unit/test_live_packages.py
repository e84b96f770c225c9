"""The live environment's package set, archive, mmdebstrap call, tree cache key and the agent payload."""

from __future__ import annotations

import pytest

from provision.builder.resolve import ArchiveEntry
from provision.live import packages, payload
from provision.live.errors import LiveBuildError
from provision.live.packages import TreeSpec, all_packages, live_archive, mmdebstrap_argv
from tests.support.files import write_tree

KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
ARCHIVE = (
    ArchiveEntry("http://deb.debian.org/debian", "bookworm", ("main", "non-free-firmware"), KEYRING),
    ArchiveEntry("http://deb.debian.org/debian-security", "bookworm-security", ("main", "non-free-firmware"), KEYRING),
)


def spec(**changes) -> TreeSpec:
    base = {
        "suite": "bookworm",
        "archive": ARCHIVE,
        "packages": tuple(all_packages()),
        "versions": (("python3", "3.11.2-1+b1"), ("busybox", "1:1.35.0-4+b3")),
        "rules": "r1",
    }
    return TreeSpec(**{**base, **changes})


def test_package_set_has_what_the_live_environment_runs():
    wanted = {
        "python3",
        "python3-requests",
        "python3-zstandard",
        "util-linux",
        "e2fsprogs",
        "gdisk",
        "smartmontools",
        "dmidecode",
        "pciutils",
        "kmod",
        "busybox",
        "dropbear-bin",
        "iproute2",
        "mount",
        "nvme-cli",  # erasure: NVMe sanitize, Format NVM
        "hdparm",  # erasure: ATA security erase, HPA/DCO
        "sg3-utils",  # erasure: SCSI sanitize, inquiry
    }
    assert wanted <= set(all_packages())
    assert len(all_packages()) == len(set(all_packages()))
    assert "dropbear" not in all_packages()  # dropbear-bin only: no init scripts, no host keys at build time
    assert packages.VARIANT == "essential"


def test_mmdebstrap_argv(tmp_path):
    hooks = tmp_path / "merged-usr"
    hooks.mkdir()
    argv = mmdebstrap_argv(spec(), tmp_path / "tree", hook_dir=hooks)
    assert argv[:5] == [
        "mmdebstrap",
        "--mode=root",
        "--format=directory",
        "--variant=essential",
        "--architectures=amd64",
    ]
    assert f"--hook-dir={hooks}" in argv
    assert "--components=main,non-free-firmware" in argv
    assert '--aptopt=APT::Install-Recommends "false"' in argv
    include = next(a for a in argv if a.startswith("--include="))
    assert include.removeprefix("--include=").split(",") == all_packages()
    position = argv.index("bookworm")
    assert argv[position + 1] == str(tmp_path / "tree")
    assert argv[position + 2 :] == [entry.line() for entry in ARCHIVE]
    assert not any(a.startswith("--hook-dir") for a in mmdebstrap_argv(spec(), tmp_path, hook_dir=tmp_path / "no"))


def test_tree_key_follows_versions_rules_and_packages_request_key_not_versions():
    base = spec()
    assert base.key == spec().key
    newer = spec(versions=(("python3", "3.11.2-1+b2"), ("busybox", "1:1.35.0-4+b3")))
    assert newer.key != base.key and newer.request_key == base.request_key
    assert spec(rules="r2").key != base.key and spec(rules="r2").request_key != base.request_key
    assert spec(packages=("python3",)).request_key != base.request_key
    assert spec(suite="trixie").request_key != base.request_key
    assert spec(versions=()).request_key == base.request_key


def test_live_archive_uses_the_machines_sources_with_firmware_component(tmp_path):
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n"
        f"Signed-By: {KEYRING}\n\nTypes: deb\nURIs: http://mirror.example/debian-security\n"
        f"Suites: bookworm-security\nComponents: main\nSigned-By: {KEYRING}\n"
    )
    lines = [entry.line() for entry in live_archive("bookworm", "bookworm", etc)]
    assert lines == [
        f"deb [signed-by={KEYRING}] http://mirror.example/debian bookworm main non-free-firmware",
        f"deb [signed-by={KEYRING}] http://mirror.example/debian bookworm-updates main non-free-firmware",
        f"deb [signed-by={KEYRING}] http://mirror.example/debian-security bookworm-security main non-free-firmware",
    ]


# ------------------------------------------------------------------------------------------- agent payload
def test_agent_files_are_the_agent_its_package_and_the_bottom_layer():
    files = payload.agent_files()
    assert "provision/__init__.py" in files and "provision/agent/__init__.py" in files
    assert "provision/errors.py" in files  # imported by provision.agent.errors
    assert "provision/wire/index.py" in files and "provision/wire/api.py" in files  # the contract
    assert "provision/agent/writer.py" in files
    bottom = ("provision/__init__.py", "provision/errors.py", "provision/macaddr.py", "provision/wire/")
    assert all(rel.startswith(("provision/agent/", *bottom)) for rel in files)
    assert payload.required_sources(files) == []
    assert files == dict(sorted(files.items()))


def test_agent_files_follow_provision_imports_including_relative_ones(tmp_path):
    pkg = write_tree(
        tmp_path / "provision",
        {
            "__init__.py": "",
            "errors.py": "import dataclasses\n",
            "macaddr.py": "import re\n",
            "util/__init__.py": "",
            "util/text.py": "import string\n",
            "facts/__init__.py": "import yaml\n",  # never reached
            "agent/__init__.py": "from provision.agent.main import run\n",
            "agent/main.py": "import requests, zstandard\nfrom provision import errors\nfrom .. import macaddr\n"
            "from ..util.text import x\n",
        },
    )
    files = payload.agent_files(pkg)
    assert sorted(files) == [
        "provision/__init__.py",
        "provision/agent/__init__.py",
        "provision/agent/main.py",
        "provision/errors.py",
        "provision/macaddr.py",
        "provision/util/__init__.py",
        "provision/util/text.py",
    ]


def test_an_import_the_live_environment_lacks_stops_the_build(tmp_path):
    pkg = write_tree(
        tmp_path / "provision",
        {"__init__.py": "", "agent/__init__.py": "", "agent/bad.py": "def f():\n    import pydantic\n"},
    )
    with pytest.raises(LiveBuildError, match=r"provision/agent/bad.py imports pydantic") as caught:
        payload.agent_files(pkg)
    assert caught.value.facts["module"] == "pydantic"


def test_files_digest_changes_with_content_and_names(tmp_path):
    pkg = write_tree(tmp_path / "provision", {"__init__.py": "", "agent/__init__.py": "x = 1\n"})
    first = payload.files_digest(payload.agent_files(pkg))
    assert first == payload.files_digest(payload.agent_files(pkg))
    (pkg / "agent" / "__init__.py").write_text("x = 2\n")
    assert payload.files_digest(payload.agent_files(pkg)) != first
