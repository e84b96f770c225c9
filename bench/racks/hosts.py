"""What runs in the rack's namespaces: ``provision serve`` in the server's (a fresh state folder per round,
the shared image store, ``multicast.transfer`` as the round asks), the real agent (``python -m
provision.agent`` with the sample probe of a QEMU PC and a file standing in for its disk) in each agent's, and
udpcast's udp-sender / udp-receiver. Server and agents import provision from a copy made at the start
(``snapshot``). Every process is tracked and killed by its PID at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from bench.racks.net import SERVER_IP, Link, Rack, RackError

REPO = Path(__file__).resolve().parents[2]
SAMPLE_PROBE = REPO / "tests" / "samples" / "probes" / "debian-vm"
WARMSTART = Path(__file__).resolve().parent / "warmstart.py"
HTTP_PORT = 8080
CLK_TCK = os.sysconf("SC_CLK_TCK")
CODE = [REPO]  # where the server and the agents import provision from: ``snapshot`` sets it


def snapshot(work: Path) -> Path:
    """Copy ``provision/`` (and the data folders beside it) into ``work`` and run every server and agent from
    the copy: each round runs the same code even while the tree is being edited (an agent once started
    mid-edit)."""
    dest = work / "code"
    shutil.rmtree(dest, ignore_errors=True)
    for folder in ("provision", "pxe", "hooks", "recipes", "images"):  # the data folders: provision.resources
        shutil.copytree(REPO / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "pyproject.toml", dest / "pyproject.toml")  # a checkout: its data folders are used
    CODE[0] = dest
    return dest


RECIPE = "name: default\ndefault: true\nimage: bench\nwipe: zero\nhostname: rack-pc\ngrow_root: false\n"
FETCH = """import json, sys, urllib.request
print(json.dumps([urllib.request.urlopen(u, timeout=30).read().decode() for u in sys.argv[1:]]))"""


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Procs:
    """Processes started in namespaces, killed by PID at the end (then their namespaces are deleted)."""

    def __init__(self) -> None:
        self.live: list[subprocess.Popen[bytes]] = []

    def start(self, ns: str, argv: list[str], out: IO[bytes] | int = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(CODE[0])}, cwd=CODE[0])  # fmt: skip
        self.live.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    def close(self) -> None:
        for proc in self.live:
            self.kill(proc)
        self.live.clear()


class Server:
    """``provision serve`` in the server's namespace on eth0, DHCP off; ``transfer``: the config's mode."""

    def __init__(self, rack: Rack, procs: Procs, work: Path, store: Path, transfer: str, rate: int) -> None:
        self.rack, self.procs, self.work = rack, procs, work
        work.mkdir(parents=True)
        (work / "boot").mkdir()
        (work / "recipes").mkdir()
        (work / "recipes" / "default.yaml").write_text(RECIPE)
        config = work / "provision.yaml"
        config.write_text(
            f"image_store: {store}\nrecipes_dir: {work / 'recipes'}\n"
            f"multicast:\n  transfer: {transfer}\n  rate: {rate}\n  keepalive_seconds: 2\n"
        )
        ready = work / "ready.json"
        argv = [sys.executable, "-m", "provision", "serve", "--config", str(config), "--interface", "eth0",
                "--address", SERVER_IP, "--dhcp", "off", "--tftp-port", "0", "--http-port", str(HTTP_PORT),
                "--state-dir", str(work / "state"), "--boot-root", str(work / "boot"),
                "--ready-file", str(ready)]  # fmt: skip
        self.log = (work / "server.log").open("ab")
        self.proc = procs.start(rack.server.ns, argv, self.log)
        deadline = time.monotonic() + 30
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RackError(f"provision serve did not start (rc {self.proc.poll()}): see {work / 'server.log'}")
            time.sleep(0.05)

    url = f"http://{SERVER_IP}:{HTTP_PORT}"

    def get(self, *paths: str, ns: str = "") -> list[str]:
        """GET each path from inside a namespace (the server's by default: the host cannot reach it)."""
        done = self.rack.exec(ns or self.rack.server.ns, [sys.executable, "-c", FETCH, *(self.url + p for p in paths)])
        if done.returncode != 0:
            raise RackError(f"GET {paths[:2]}...: {done.stderr.strip()[-300:]}")
        return list(json.loads(done.stdout))

    def token(self, link: Link) -> str:
        """The machine's boot (before the clock starts): its iPXE script, asked from its own namespace and MAC,
        holds a per-boot token."""
        [script] = self.get(f"/boot/{link.mac}.ipxe", ns=link.ns)
        if "provision.token=" not in script:
            raise RackError(f"{link.mac}: no token in its boot script: {script[-300:]}")
        return script.split("provision.token=")[1].split()[0]

    def runs(self) -> list[dict[str, Any]]:
        return list(json.loads(self.get("/api/v1/runs")[0]))

    def cpu(self) -> float:
        return proc_cpu(self.proc.pid)

    def stop(self) -> None:
        self.procs.kill(self.proc)
        self.log.close()


def start_agent(procs: Procs, link: Link, mac: str, token: str, disks: Path, log: Path,
                nice: int = 0, warm: tuple[Path, Path] | None = None) -> subprocess.Popen[bytes]:  # fmt: skip
    """One agent (``nice``: its niceness; the rack bench runs agents below the server, see its docstring).
    ``warm``: (READY, GO): it imports, creates READY and runs only once GO exists (``warmstart.py``)."""
    launcher = ["-m", "provision.agent"] if warm is None else [str(WARMSTART), str(warm[0]), str(warm[1]), "--"]
    argv = ["nice", "-n", str(nice), sys.executable, *launcher, "--server", Server.url, "--mac", mac,
            "--token", token, "--probe-dir", str(SAMPLE_PROBE), "--disks-from", str(disks), "--once", "--no-grow",
            "--no-firstboot-secret", "--no-screen", "--cmdline", os.devnull, "--deadline", "120",
            "--fetch-deadline", "120"]  # fmt: skip
    with log.open("wb") as out:
        return procs.start(link.ns, argv, out)


def udp_receiver(procs: Procs, link: Link, target: Path, log: Path, nice: int = 0) -> subprocess.Popen[bytes]:
    argv = ["nice", "-n", str(nice), "udp-receiver", "--nokbd", "--interface", "eth0", "--file", str(target)]
    with log.open("wb") as out:
        return procs.start(link.ns, argv, out)


def udp_sender(
    procs: Procs, rack: Rack, export: Path, receivers: int, bitrate: int, log: Path
) -> subprocess.Popen[bytes]:
    argv = ["udp-sender", "--nokbd", "--interface", "eth0", "--file", str(export), "--min-receivers",
            str(receivers), "--max-bitrate", f"{bitrate // 1000}k"]  # fmt: skip
    with log.open("wb") as out:
        return procs.start(rack.server.ns, argv, out)
