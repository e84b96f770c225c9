"""Fakes for the image builder tests (tests/unit/test_image_build*.py).

- ``RELEASE``, ``MiB``: the fake kernel release of the fake packages; a mebibyte.
- ``FakeCache``: DebCache's interface over small fake package trees (busybox, shim, GRUB, a kernel...).
- ``FakeStore`` / ``FakeVersion``: ImageStore's interface for a build: records what is imported and published.
- ``cache`` (fixture): a FakeCache under the test's tmp_path, typed as a DebCache.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from provision.bootfiles import DebCache, Package, PackageMissing
from tests.support.files import write_tree

RELEASE = "6.1.0-99-amd64"
MiB = 1 << 20


class FakeCache:
    """DebCache's interface over small fake package trees."""

    codename = "bookworm"
    lists_max_age = 0.0

    def __init__(self, base: Path) -> None:
        self.cache_dir = base
        busybox = "#!/bin/sh\necho /bin/sh\necho /sbin/init\necho /bin/mount\n"
        self.packages = {
            "busybox-static": write_tree(base / "busybox", {"bin/busybox": busybox}, 0o755),
            "shim-signed": write_tree(base / "shim", {"usr/lib/shim/shimx64.efi.signed": b"MZshim"}),
            "grub-efi-amd64-signed": write_tree(
                base / "grubefi", {"usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed": b"MZgrub"}
            ),
            "grub-pc-bin": write_tree(
                base / "grubpc",
                {
                    "usr/lib/grub/i386-pc/boot.img": b"\xeb\x63" + b"\0" * 508 + b"\x55\xaa",
                    "usr/lib/grub/i386-pc/normal.mod": b"normal",
                    "usr/lib/grub/i386-pc/command.lst": b"linux: linux\n",
                },
            ),
            "hello": write_tree(base / "hello", {"usr/bin/hello": b"\x7fELF hello"}),
            f"linux-image-{RELEASE}": write_tree(
                base / "kernel",
                {
                    f"boot/vmlinuz-{RELEASE}": b"MZkernel",
                    f"lib/modules/{RELEASE}/kernel/drivers/block/virtio_blk.ko": b"\x7fELF blk",
                    f"lib/modules/{RELEASE}/kernel/fs/ext4/ext4.ko": b"\x7fELF ext4",
                    f"lib/modules/{RELEASE}/modules.dep": "kernel/drivers/block/virtio_blk.ko:\n"
                    "kernel/fs/ext4/ext4.ko:\n",
                },
            ),
        }

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        yield

    def get(self, name: str, suite: str = "host") -> Package:
        if name not in self.packages:
            raise PackageMissing(f"package {name} not found", package=name, suite="bookworm")
        return Package(name, "1.0-1", "bookworm", self.packages[name])

    def kernel(self) -> Package:
        return self.get(f"linux-image-{RELEASE}")


@dataclass
class FakeVersion:
    """What FakeStore.import_raw returns: an image version with an empty index."""

    name: str
    digest: str = "ab" * 32
    ref: str = "tiny@20260101-000000-abababababab"
    index: Any = None


@dataclass
class FakeStore:
    """ImageStore's interface for a build: records what is imported and published, holds nothing."""

    imported: list[dict[str, Any]] = field(default_factory=list)
    published: list[Any] = field(default_factory=list)

    def current(self, name: str) -> None:
        return None

    def names(self) -> list[str]:
        return []

    def versions(self, name: str) -> tuple[Any, ...]:
        return ()

    def import_raw(self, raw: Path, name: str, **kwargs: Any) -> FakeVersion:
        self.imported.append({"raw": raw, "name": name, **kwargs})
        index = type("Index", (), {"chunks": (), "holes": 0, "unique_chunks": lambda self: {}})()
        return FakeVersion(name, index=index)

    def publish(self, version: Any) -> None:
        self.published.append(version)


@pytest.fixture
def cache(tmp_path: Path) -> DebCache:
    """A FakeCache under ``tmp_path/debs``, typed as the DebCache the builder takes."""
    return cast(DebCache, FakeCache(tmp_path / "debs"))
