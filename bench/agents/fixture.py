"""What the agents talk to: a work folder with an image store (one small image), a default recipe and the
server's configuration; ``provision serve`` as its own process on 127.0.0.1 (every port 0, a ready file, the
DHCP proxy on so that a PC can network-boot again); the PXE DHCPDISCOVER of such a boot.

The image: an 8 MiB disk with a GPT (ESP + root) and 2.5 MiB of seeded random bytes, imported with 64 KiB
chunks, so its index (what each agent fetches) has 128 chunks of which about 40 hold data. The probe each
agent sends is the real one of ``tests/samples/probes/debian-vm`` (read as data), with the agent's own MAC.
"""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provision.builder.layout import ESP, NewPartition, write_gpt
from provision.dhcp import MessageType, client_request
from provision.images import ImageStore

REPO = Path(__file__).resolve().parents[2]
PROBE_DIR = REPO / "tests" / "samples" / "probes" / "debian-vm"
PROBE_FILES = ("cpuinfo", "firmware", "lsblk.json", "lspci.txt", "meminfo")  # + "mac", the agent's own
MiB = 1 << 20
IMAGE = "bench"
CHUNK = 64 << 10
RECIPE = f"name: default\ndefault: true\nimage: {IMAGE}\nwipe: zero\nhostname: bench-pc\n"
PXE_OPTIONS = {60: b"PXEClient:Arch:00000:UNDI:002001", 93: b"\x00\x00"}
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class Fixture:
    """The work folder's inputs: the image version (digest, its index file), the probe, the config file."""

    work: Path
    config: Path
    digest: str
    index_file: Path
    data_chunks: int
    holes: int
    probe: dict[str, str]

    @property
    def index_url(self) -> str:
        return f"/images/{IMAGE}/{self.digest}/index.json"


def make_disk(path: Path, size: int = 8 * MiB, data: int = 5 * MiB // 2, seed: int = 12) -> Path:
    """A sparse disk with a GPT (ESP 1 MiB + root) and ``data`` seeded random bytes in 4 extents."""
    rng = random.Random(seed)
    with path.open("w+b") as f:
        write_gpt(f, size, [NewPartition(1 * MiB, ESP, "EFI"), NewPartition(0, name="root")], seed=seed)
        for n in range(4):
            f.seek(2 * MiB + n * (size - 3 * MiB) // 4)
            f.write(rng.randbytes(data // 4))
    return path


def read_probe() -> dict[str, str]:
    return {name: (PROBE_DIR / name).read_text() for name in PROBE_FILES}


def make_fixture(work: Path) -> Fixture:
    """The store with its one image, the recipe folder and the server's YAML config under ``work``."""
    recipes = work / "recipes"
    recipes.mkdir(parents=True, exist_ok=True)
    (recipes / "default.yaml").write_text(RECIPE)
    store = ImageStore(work / "images")
    version = store.import_raw(make_disk(work / "disk.raw"), IMAGE, chunk_size=CHUNK)
    config = work / "provision.yaml"
    config.write_text(json.dumps({"recipes_dir": str(recipes), "image_store": str(work / "images")}))
    index = version.index
    return Fixture(work, config, version.digest, store.index_path(IMAGE, version.digest),
                   len(index.chunks) - index.holes, index.holes, read_probe())  # fmt: skip


class Served:
    """A server process, waited for until it serves (its ready file, or its HTTP port when ``ready`` is an
    int: nginx writes no ready file): its ports, its PID, SIGTERM and wait."""

    def __init__(self, name: str, argv: list[str], ready: Path | int, log: Path) -> None:
        self.name = name
        self.log = log
        if isinstance(ready, Path):
            ready.unlink(missing_ok=True)
        with log.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + START_TIMEOUT
        while not (ready.exists() if isinstance(ready, Path) else _listens(ready)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"agents bench: {name} did not start (rc {self.proc.poll()}); see {log}")
            time.sleep(0.05)
        if isinstance(ready, Path):
            time.sleep(0.05)  # written in one call; read it after a breath anyway
            self.ports: dict[str, int] = {k: int(v) for k, v in json.loads(ready.read_text()).items() if v}
        else:
            self.ports = {"http": ready}

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}"

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then wait (SIGKILL after ``timeout``); the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def _listens(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_provision(fx: Fixture) -> Served:
    """``python -m provision serve`` on 127.0.0.1: HTTP, TFTP, DHCP proxy, all on port 0."""
    boot = fx.work / "boot"
    (boot / "live").mkdir(parents=True, exist_ok=True)
    (boot / "undionly.kpxe").write_bytes(b"\0" * 70_000)
    (boot / "live" / "vmlinuz").write_bytes(b"kernel" * 1000)
    ready = fx.work / "ready.json"
    argv = [
        sys.executable, "-m", "provision", "serve", "--config", str(fx.config), "--address", "127.0.0.1",
        "--state-dir", str(fx.work / "state"), "--boot-root", str(boot), "--http-port", "0", "--tftp-port", "0",
        "--dhcp-port", "0", "--proxy-port", "0", "--ready-file", str(ready),
    ]  # fmt: skip
    return Served("provision serve", argv, ready, fx.work / "server.log")


def netboot(port: int, mac: str, timeout: float = 5.0) -> None:
    """What a PC's PXE ROM sends first: a PXE DHCPDISCOVER from ``mac`` to the server's DHCP port on
    127.0.0.1, and its answer (the server then knows the PC network-booted). OSError on no answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(timeout)
        xid = random.getrandbits(32)
        packet = client_request(MessageType.DISCOVER, mac, xid=xid, options=PXE_OPTIONS)
        sock.sendto(packet.encode(), ("127.0.0.1", port))
        sock.recvfrom(4096)


def log_summary(log: Path) -> dict[str, Any]:
    """Lines of a server log by level word, and the tracebacks in it."""
    text = log.read_text(errors="replace") if log.exists() else ""
    lines = text.splitlines()
    return {
        "lines": len(lines),
        "warnings": sum("WARNING" in line for line in lines),
        "errors": sum("ERROR" in line or "CRITICAL" in line for line in lines),
        "tracebacks": text.count("Traceback (most recent call last)"),
    }
