"""The live environment in tests.

- ``LIVE_OUT``: where the session's live environment is built ($PROVISION_LIVE_OUT, default
  /var/tmp/provision-live-test/live); the ``live_env`` fixture (tests/conftest.py) returns a ``LiveEnv``.
- ``LiveEnv``: that build (``result``, its ``out`` folder) and the key pair it trusts (``key``).
- ``live_manifest(folder)``: a complete LiveManifest (live.json) over a fake vmlinuz and initrd.img written in
  ``folder``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from provision.live import LiveResult
from provision.live.manifest import FileInfo, LiveManifest
from provision.sshkeys import ServerKey

LIVE_OUT = Path(os.environ.get("PROVISION_LIVE_OUT", "/var/tmp/provision-live-test/live"))


@dataclass(frozen=True)
class LiveEnv:
    result: LiveResult
    key: ServerKey  # the key pair the live environment trusts (log in with key.private_path)

    @property
    def out(self) -> Path:
        return self.result.out


def live_manifest(tmp_path: Path) -> LiveManifest:
    """live.json's content for a fake vmlinuz (100 bytes) and initrd.img (300 bytes) written in ``tmp_path``."""
    (tmp_path / "vmlinuz").write_bytes(b"k" * 100)
    (tmp_path / "initrd.img").write_bytes(b"i" * 300)
    return LiveManifest(
        inputs="ab" * 32,
        kernel_release="6.1.0-99-amd64",
        kernel_package="linux-image-6.1.0-99-amd64",
        kernel_version="6.1.200-1",
        vmlinuz=FileInfo.of(tmp_path / "vmlinuz"),
        initrd=FileInfo.of(tmp_path / "initrd.img"),
        initrd_uncompressed=1000,
        compression="zstd-19",
        packages={"python3": "3.11.2-1+b1", "busybox": "1:1.35.0-4+b3"},
        modules=["r8169", "ahci"],
        firmware=["rtl_nic/rtl8168g-2.fw"],
        agent_sha256="cd" * 32,
        agent_files=["provision/__init__.py"],
        authorized_key="SHA256:abc",
        tree_key="ef" * 32,
        tree_cached=True,
        build_seconds=12.34,
        steps={"pack": 10.0},
    )
