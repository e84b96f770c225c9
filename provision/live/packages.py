"""What the live environment is made of: Debian packages, the archive they come from, the mmdebstrap call.

The archive is the machine's own (the image builder's ``machine_archive``: the URIs of its apt sources for
its codename, ``-updates`` and ``-security``), with the components ``main`` and ``non-free-firmware`` (NIC
firmware). The variant is ``essential`` plus ``--include``: measured on Debian 12, ``--variant=custom`` with
an explicit list fails (mmdebstrap installs everything in one ``dpkg --install --force-depends``, and
libc6's preinst then runs before ``sed`` or debconf exist), and the essential set it would need differs
only by bash, login/PAM, hostname and ncurses (about 15 MB before compression). The ``merged-usr`` hook
installs ``usr-is-merged`` first: without it apt picks ``usrmerge`` for init-system-helpers and pulls
perl (+45 MB).

The bootstrapped tree is cached under a key made of everything that changes it: suite, archive lines,
variant, packages and the versions apt would install now (``TreeSpec.key``), so a security update
rebuilds it and an unchanged archive reuses it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provision.bootfiles import AptFailed
from provision.builder.resolve import (
    ArchiveEntry,
    ImageApt,
    machine_archive,
    missing_packages,
    parse_simulation,
)
from provision.live.errors import LiveBuildError

log = logging.getLogger(__name__)

TREE_FORMAT = 2  # bump when the same packages would give a different prepared tree (strip rules, links, pyc)
VARIANT = "essential"
COMPONENTS = ("main", "non-free-firmware")
MERGED_USR_HOOK = Path("/usr/share/mmdebstrap/hooks/merged-usr")

# What the live environment runs: the agent (python3 + requests + zstandard), its probe and disk tools,
# module loading, DHCP and a shell (busybox), SSH (dropbear), and the erasure tools: nvme-cli (NVMe sanitize,
# Format NVM), hdparm (ATA security erase, HPA), sg3-utils (SCSI sanitize, inquiry); rtcwake (a short suspend
# that unfreezes ATA drives) comes with util-linux.
PACKAGES = (
    "busybox",
    "python3",
    "python3-requests",
    "python3-zstandard",
    "util-linux",
    "mount",  # losetup, mount
    "e2fsprogs",
    "gdisk",
    "smartmontools",
    "dmidecode",
    "pciutils",
    "kmod",
    "dropbear-bin",
    "iproute2",
    "nvme-cli",
    "hdparm",
    "sg3-utils",
)
# Firmware some NIC drivers ask for (r8169's PHY patches, bnx2's required microcode), from non-free-firmware.
# Only the files the selected modules name are copied into the initramfs.
FIRMWARE_PACKAGES = ("firmware-realtek", "firmware-bnx2")

# Programs the live environment must have after stripping (the build checks them).
REQUIRED_PROGRAMS = (
    "usr/bin/python3",
    "usr/bin/busybox",
    "usr/sbin/dropbear",
    "usr/bin/dropbearkey",
    "usr/sbin/modprobe",
    "usr/bin/lsblk",
    "usr/bin/partx",
    "usr/sbin/losetup",
    "usr/sbin/e2fsck",
    "usr/sbin/resize2fs",
    "usr/sbin/debugfs",  # writes the first-boot secret into the installed root (agent/seed.py)
    "usr/bin/mount",  # the hook runner mounts the installed root and binds /dev, /sys (agent/hookmount.py)
    "usr/bin/umount",
    "usr/sbin/chroot",  # and runs target hooks in it (agent/hookrun.py)
    "usr/sbin/mke2fs",
    "usr/sbin/sgdisk",
    "usr/sbin/smartctl",
    "usr/sbin/dmidecode",
    "usr/bin/lspci",
    "usr/bin/ip",
    "usr/sbin/blkdiscard",
    "usr/sbin/wipefs",
    # erasure (agent/erasure/): per drive, by what it can do
    "usr/sbin/nvme",
    "usr/sbin/hdparm",
    "usr/bin/sg_inq",
    "usr/bin/sg_opcodes",
    "usr/bin/sg_readcap",
    "usr/bin/sg_sanitize",
    "usr/bin/sg_requests",  # polls a SANITIZE started with --early (agent/erasure/commands.py)
    "usr/bin/sg_format",
    "usr/sbin/rtcwake",
)


def all_packages() -> list[str]:
    return list(dict.fromkeys([*PACKAGES, *FIRMWARE_PACKAGES]))


def live_archive(suite: str, host_codename: str, etc_apt: Path = Path("/etc/apt")) -> list[ArchiveEntry]:
    """The machine's archive entries (suite, -updates, -security) with main and non-free-firmware."""
    return machine_archive(suite, COMPONENTS, host_codename, etc_apt)


@dataclass(frozen=True)
class TreeSpec:
    """One bootstrapped tree: what mmdebstrap is asked for and what apt said it would install."""

    suite: str
    archive: tuple[ArchiveEntry, ...]
    packages: tuple[str, ...]
    versions: tuple[tuple[str, str], ...] = ()  # apt's simulation; empty when the archive was unreachable
    rules: str = ""  # digest of the strip rules and required programs (they shape the prepared tree)
    variant: str = VARIANT

    def request(self) -> dict[str, Any]:
        return {
            "format": TREE_FORMAT,
            "suite": self.suite,
            "variant": self.variant,
            "archive": [entry.line() for entry in self.archive],
            "packages": list(self.packages),
            "rules": self.rules,
        }

    @property
    def request_key(self) -> str:
        """The key without versions: finds an earlier tree of the same request when apt cannot be asked."""
        return _digest(self.request())

    @property
    def key(self) -> str:
        return _digest({**self.request(), "versions": dict(self.versions)})


def _digest(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def mmdebstrap_argv(spec: TreeSpec, target: Path, *, hook_dir: Path | None = MERGED_USR_HOOK) -> list[str]:
    """``mmdebstrap`` in root mode into a folder, the archive lines as mirrors, no recommends."""
    argv = ["mmdebstrap", "--mode=root", "--format=directory", f"--variant={spec.variant}", "--architectures=amd64"]
    if hook_dir is not None and hook_dir.is_dir():
        argv.append(f"--hook-dir={hook_dir}")
    argv += [f"--components={','.join(COMPONENTS)}", '--aptopt=APT::Install-Recommends "false"']
    argv += [f"--include={','.join(spec.packages)}", spec.suite, str(target)]
    argv += [entry.line() for entry in spec.archive]
    return argv


class LiveApt(ImageApt):
    """apt on a private configuration for the live archive (lists shared with images of the same archive)."""

    def simulate_essential(self, packages: Sequence[str]) -> dict[str, str]:
        """Every package and version ``mmdebstrap --variant=essential --include=...`` would install."""
        pattern = "?and(?architecture(amd64),?essential)"
        args = ["--simulate", "-o", "APT::Install-Recommends=false", "install", "usr-is-merged", *packages, pattern]
        return parse_simulation(self._run("apt-get", [*args]))


def resolve_versions(apt: LiveApt, packages: Sequence[str], lists_max_age: float) -> dict[str, str] | None:
    """apt's versions for the package set, or None when the archive cannot be reached (logged)."""
    try:
        apt.base.mkdir(parents=True, exist_ok=True)
        apt.update(lists_max_age)
        return apt.simulate_essential(packages)
    except AptFailed as exc:
        missing = missing_packages(str(exc.facts.get("stderr", "")))
        if missing:
            raise LiveBuildError(
                f"live: package {missing[0]} not found in {apt.entries[0].suite}", step="resolve", package=missing[0]
            ) from exc
        log.warning("live: cannot ask apt for package versions (%s): reusing a cached tree if there is one", exc)
        return None
