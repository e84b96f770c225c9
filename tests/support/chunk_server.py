"""An image store with one image, and ``provision serve`` over it as a process the tests kill and restart
(the agent writer's and the imaging runs' functional tests).

- ``SIZE``: the raw disk's size (129 chunks of 64 KiB; the last one, 1536 bytes, holds the end of the backup GPT).
- ``build_store(tmp)``: the raw disk (``make_disk``, seeded) imported as image ``educ``: (store, version, raw).
- ``free_port()``: a TCP port free on 127.0.0.1 now (the server must keep its port across restarts).
- ``Server``: ``python -m provision serve`` on that port with ``tmp/store`` as its image store: ``start()``
  (waits for its ready file), ``kill()`` (SIGKILL), ``stop()`` (SIGTERM), ``url``; its stderr appended to
  ``tmp/serve.log`` (``log()``). Options: ``dhcp`` (proxyDHCP on a port of its own, in ``ports["dhcp"]``, so a
  test can ``tests.support.serve.netboot`` a PC), ``state`` (another state folder), ``busy_timeout`` (the state
  store's SQLite busy timeout, through ``tests.support.launch``), ``image_store`` (another image store folder),
  ``config`` (more YAML for its configuration file).
- ``target_sha(path)``: the sha256 of a target's first SIZE bytes, to compare with the raw disk's.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from provision.images import ImageStore, ImageVersion
from tests.support.files import sha256_file
from tests.support.images import CHUNK, MiB, make_disk
from tests.support.paths import REPO
from tests.support.wait import wait_for

SIZE = 8 * MiB + 1536  # 129 chunks of 64 KiB; the last one, 1536 bytes, holds the end of the backup GPT
EXTENTS = [(1 * MiB, 20 * CHUNK), (3 * MiB + 4096, 9 * CHUNK), (5 * MiB, 300_000), (7 * MiB, 10 * CHUNK)]
START_TIMEOUT = 30.0


def build_store(tmp: Path) -> tuple[ImageStore, ImageVersion, Path]:
    """``tmp/master.img`` imported as image ``educ`` into ``tmp/store``: (store, version, raw disk)."""
    raw = make_disk(tmp / "master.img", SIZE, EXTENTS, seed=42)
    store = ImageStore(tmp / "store")
    version = store.import_raw(raw, "educ", chunk_size=CHUNK, created=datetime(2026, 11, 27, tzinfo=UTC))
    return store, version, raw


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """``provision serve`` (no DHCP) on ``port`` with the image store ``tmp/store`` and, if given, recipes."""

    tmp: Path
    port: int
    recipes: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    dhcp: bool = False
    state: Path | None = None
    busy_timeout: float | None = None
    ports: dict[str, int] = field(default_factory=dict)
    image_store: Path | None = None
    config: str = ""  # more YAML for its configuration file (e.g. a hooks: section)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        (self.tmp / "boot").mkdir(exist_ok=True)
        config = self.tmp / "provision.yaml"
        config.write_text(
            f"image_store: {self.store}\n" + (f"recipes_dir: {self.recipes}\n" if self.recipes else "") + self.config
        )
        ready = self.tmp / "ready.json"
        ready.unlink(missing_ok=True)
        launcher = ["-m", "provision"]
        if self.busy_timeout is not None:
            launcher = ["-m", "tests.support.launch", "--busy-timeout", str(self.busy_timeout)]
        dhcp = ["--dhcp", "proxy", "--dhcp-port", "0", "--proxy-port", "0"] if self.dhcp else ["--dhcp", "off"]
        argv = [
            sys.executable, *launcher, "serve", "--config", str(config), "--address", "127.0.0.1", *dhcp,
            "--tftp-port", "0", "--http-port", str(self.port), "--state-dir", str(self.state_dir),
            "--boot-root", str(self.tmp / "boot"), "--ready-file", str(ready),
        ]  # fmt: skip
        with (self.tmp / "serve.log").open("ab") as log:
            proc = self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, cwd=REPO)
        wait_for(lambda: ready.exists() or proc.poll() is not None, START_TIMEOUT, interval=0.05)
        if not ready.exists():
            assert proc.poll() is None, f"provision serve exited with {proc.returncode}: {self.log()[-2000:]}"
            raise AssertionError("provision serve did not start")
        self.ports = json.loads(ready.read_text())

    @property
    def store(self) -> Path:
        """Its image store: ``image_store`` (another folder, shared by several servers), else ``tmp/store``."""
        return self.image_store or self.tmp / "store"

    @property
    def state_dir(self) -> Path:
        return self.state or self.tmp / "state"

    def log(self) -> str:
        """What every start of the server wrote on stderr (its log)."""
        path = self.tmp / "serve.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """SIGTERM, as systemd stops it; waited for."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


def target_sha(path: Path) -> str:
    """The sha256 of the target's first SIZE bytes (where the image goes)."""
    return sha256_file(path, SIZE)
