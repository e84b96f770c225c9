"""``live.json``: what a live environment build is, written beside ``vmlinuz`` and ``initrd.img``.

It names the kernel (release, package, version), both files (size, sha256), the Debian packages with
versions, the modules and firmware files, the agent's source digest, the authorized key's fingerprint, the
cached tree used, and the timings. ``inputs`` is the digest of everything the build was made from: a
later build with the same inputs and intact files reuses the output instead of building again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provision.bootfiles import sha256_file
from provision.live.pack import write_atomic

LIVE_JSON = "live.json"
VMLINUZ = "vmlinuz"
INITRD = "initrd.img"
FORMAT = 1
SIZE_GOAL = 120 * 2**20  # kernel + initramfs


@dataclass(frozen=True)
class FileInfo:
    size: int
    sha256: str

    @classmethod
    def of(cls, path: Path) -> FileInfo:
        return cls(path.stat().st_size, sha256_file(path))

    def matches(self, path: Path) -> bool:
        """Is ``path`` still this file (size, then sha256)?"""
        return path.is_file() and path.stat().st_size == self.size and sha256_file(path) == self.sha256


@dataclass(frozen=True)
class LiveManifest:
    inputs: str
    kernel_release: str
    kernel_package: str
    kernel_version: str
    vmlinuz: FileInfo
    initrd: FileInfo
    initrd_uncompressed: int
    compression: str  # "zstd-19"
    packages: dict[str, str]
    modules: list[str]
    firmware: list[str]
    agent_sha256: str
    agent_files: list[str]
    authorized_key: str  # fingerprint (SHA256:...)
    tree_key: str
    tree_cached: bool
    build_seconds: float
    steps: dict[str, float] = field(default_factory=dict)
    built: str = ""  # UTC, ISO 8601

    @property
    def total_size(self) -> int:
        return self.vmlinuz.size + self.initrd.size

    @property
    def within_goal(self) -> bool:
        return self.total_size <= SIZE_GOAL

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "built": self.built or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": round(self.build_seconds, 1),
            "steps": {name: round(seconds, 1) for name, seconds in self.steps.items()},
            "inputs": self.inputs,
            "kernel": {"release": self.kernel_release, "package": self.kernel_package, "version": self.kernel_version},
            "files": {
                VMLINUZ: {"size": self.vmlinuz.size, "sha256": self.vmlinuz.sha256},
                INITRD: {
                    "size": self.initrd.size,
                    "sha256": self.initrd.sha256,
                    "compression": self.compression,
                    "uncompressed": self.initrd_uncompressed,
                },
            },
            "total_size": self.total_size,
            "size_goal": SIZE_GOAL,
            "within_goal": self.within_goal,
            "packages": dict(sorted(self.packages.items())),
            "modules": {"count": len(self.modules), "names": sorted(self.modules)},
            "firmware": sorted(self.firmware),
            "agent": {"sha256": self.agent_sha256, "files": sorted(self.agent_files)},
            "authorized_key": self.authorized_key,
            "tree": {"key": self.tree_key, "cached": self.tree_cached},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LiveManifest:
        files = data["files"]
        return cls(
            inputs=str(data["inputs"]),
            kernel_release=str(data["kernel"]["release"]),
            kernel_package=str(data["kernel"]["package"]),
            kernel_version=str(data["kernel"]["version"]),
            vmlinuz=FileInfo(int(files[VMLINUZ]["size"]), str(files[VMLINUZ]["sha256"])),
            initrd=FileInfo(int(files[INITRD]["size"]), str(files[INITRD]["sha256"])),
            initrd_uncompressed=int(files[INITRD]["uncompressed"]),
            compression=str(files[INITRD]["compression"]),
            packages={str(k): str(v) for k, v in data["packages"].items()},
            modules=[str(m) for m in data["modules"]["names"]],
            firmware=[str(f) for f in data["firmware"]],
            agent_sha256=str(data["agent"]["sha256"]),
            agent_files=[str(f) for f in data["agent"]["files"]],
            authorized_key=str(data["authorized_key"]),
            tree_key=str(data["tree"]["key"]),
            tree_cached=bool(data["tree"]["cached"]),
            build_seconds=float(data["build_seconds"]),
            steps={str(k): float(v) for k, v in data.get("steps", {}).items()},
            built=str(data.get("built", "")),
        )


def write_manifest(out: Path, manifest: LiveManifest) -> Path:
    path = out / LIVE_JSON
    write_atomic(path, (json.dumps(manifest.to_dict(), indent=2) + "\n").encode())
    return path


def read_manifest(out: Path) -> LiveManifest | None:
    """``out/live.json``, or None when absent, unreadable or of another format."""
    try:
        data = json.loads((out / LIVE_JSON).read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            return None
        return LiveManifest.from_dict(data)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def output_intact(out: Path, manifest: LiveManifest) -> bool:
    """Are ``vmlinuz`` and ``initrd.img`` in ``out`` the files the manifest describes?"""
    return manifest.vmlinuz.matches(out / VMLINUZ) and manifest.initrd.matches(out / INITRD)
