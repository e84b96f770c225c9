"""Whole imaging runs for functional tests: ``provision serve`` as a process (``tests.support.chunk_server``) with
one image and a default recipe, the agent as ``python -m provision.agent`` processes or in this process, files
standing in for disks, the sample probe of a QEMU PC (tests/functional/test_agent_runs.py and the fault
matrix, tests/functional/test_fault_*.py).

- ``RECIPE`` (image ``educ``, no grow), ``QUICK`` (a RetryPolicy of seconds, not minutes).
- ``Site``: the server, its image version and the raw disk's sha256; ``token(mac)`` (the iPXE script's
  per-boot token), ``boot_script(mac)``, ``netboot(mac)`` (a PXE DHCPDISCOVER: needs ``dhcp=True``), and the
  API read back: ``runs(mac)``, ``events(mac, kind)``, ``machine(mac)``, ``data_chunks``.
- ``make_site(tmp_path, dhcp=..., busy_timeout=...)``: a Site, its server killed afterwards.
- ``disks(folder, *specs)``: files standing in for disks.
- ``agent_process(url, mac, token, folder, *extra)``, ``result(proc)``: the agent as a process and its result
  line; ``stop(proc)``: killed by its PID if still running, reaped; ``AGENT_ENV``.
- ``in_process(site, tmp_path, mac, wire, **config)``: the agent in this process with a chunk session of the
  test's (``WireFaults``: a byte flipped or the body cut for the first GETs of one chunk, a chunk always
  corrupt, or an action before the n-th chunk GET); ``data_digest(site, n)``: the n-th data chunk's sha256.
- ``assert_never_verified(site, mac)``: no run of the machine done, no complete verification.
- ``assert_ends(site, mac, ...)``: the end state every fault-matrix case checks (run, machine, reason,
  verifications, the next boot script).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from provision.agent.fetch import HttpResponse, RetryPolicy
from provision.agent.main import AgentConfig, Outcome, run_agent
from provision.images import ImageVersion
from tests.support.chunk_server import SIZE, Server, build_store, free_port
from tests.support.files import sha256_file, sparse_file
from tests.support.paths import REPO, SAMPLE_PROBE
from tests.support.serve import PXE_OPTIONS
from tests.support.wait import wait_for

RECIPE = "name: default\ndefault: true\nimage: educ\nwipe: zero\nhostname: lab-pc\ngrow_root: false\n"
QUICK = RetryPolicy(deadline=30, initial_delay=0.05, max_delay=0.5, connect_timeout=2, read_timeout=10)
AGENT_ENV = {**os.environ, "PYTHONPATH": str(REPO)}


@dataclass
class Site:
    server: Server
    version: ImageVersion
    raw_sha: str

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def data_chunks(self) -> int:
        return len(self.version.index.chunks) - self.version.index.holes

    def boot_script(self, mac: str) -> str:
        response = requests.get(f"{self.url}/boot/{mac}.ipxe", timeout=10)
        assert response.status_code == 200, response.text
        return response.text

    def token(self, mac: str) -> str:
        """Boot the machine: its iPXE script holds a fresh per-boot token."""
        script = self.boot_script(mac)
        assert "provision.token=" in script, script
        return script.split("provision.token=")[1].split()[0]

    def netboot(self, mac: str) -> None:
        """What the PC's PXE ROM does at power-on: a DHCPDISCOVER, answered (the server notes the boot)."""
        import socket

        from provision.dhcp import MessageType, client_request

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(5)
            packet = client_request(MessageType.DISCOVER, mac, xid=0x5E7B007, options=PXE_OPTIONS)
            sock.sendto(packet.encode(), ("127.0.0.1", self.server.ports["dhcp"]))
            sock.recvfrom(4096)

    def runs(self, mac: str | None = None) -> list[dict[str, Any]]:
        params = {"mac": mac} if mac else {}
        runs: list[dict[str, Any]] = requests.get(f"{self.url}/api/v1/runs", params=params, timeout=10).json()
        return runs

    def events(self, mac: str, kind: str) -> list[dict[str, Any]]:
        events = requests.get(f"{self.url}/api/v1/machines/{mac}/events", timeout=10).json()
        return [e["detail"] for e in events if e["kind"] == kind]

    def machine(self, mac: str) -> dict[str, Any]:
        [machine] = [m for m in requests.get(f"{self.url}/api/v1/machines", timeout=10).json() if m["mac"] == mac]
        return dict(machine)


@contextmanager
def make_site(tmp_path: Path, **server: Any) -> Iterator[Site]:
    """The image ``educ`` in ``tmp_path/store``, the default recipe, ``provision serve`` over them (options of
    ``Server``), killed afterwards."""
    _, version, raw = build_store(tmp_path)
    recipes = tmp_path / "recipes"
    recipes.mkdir(exist_ok=True)
    (recipes / "default.yaml").write_text(RECIPE)
    srv = Server(tmp_path, free_port(), recipes=recipes, **server)
    srv.start()
    try:
        yield Site(srv, version, sha256_file(raw))
    finally:
        srv.kill()


def disks(folder: Path, *specs: tuple[str, int, dict[str, Any] | None]) -> Path:
    """A folder of files standing in for disks: (name, size, lsblk fields or None)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, size, meta in specs:
        sparse_file(folder / name, size)
        if meta is not None:
            (folder / f"{name}.json").write_text(json.dumps(meta))
    return folder


def agent_process(url: str, mac: str, token: str, disk_dir: Path, *extra: str) -> subprocess.Popen[str]:
    """``python -m provision.agent`` against ``url`` (``--once``, no grow, deadlines of 30 s unless ``extra``
    says otherwise: argparse keeps the last value)."""
    argv = [sys.executable, "-m", "provision.agent", "--server", url, "--mac", mac, "--token", token,
            "--probe-dir", str(SAMPLE_PROBE), "--disks-from", str(disk_dir), "--once", "--no-grow", "--deadline", "30",
            "--fetch-deadline", "30", "--cmdline", os.devnull, *extra]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=AGENT_ENV)


def result(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    """(exit code, the result line, stderr) of an agent process (killed, by its PID, if it outlives ``timeout``)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(proc)
        raise
    last = out.strip().splitlines()[-1] if out.strip() else ""
    assert last.startswith("PROVISION-AGENT-RESULT "), (out, err)
    return proc.returncode, last, err


def stop(proc: subprocess.Popen[str]) -> None:
    """SIGKILL an agent process still running (by its PID); reap it and close its pipes unless done already."""
    if proc.poll() is None:
        proc.kill()
    if proc.stdout is not None and not proc.stdout.closed:
        proc.communicate(timeout=30)


def assert_never_verified(site: Site, mac: str) -> None:
    """No run of this machine is done, and no verification of it is complete."""
    for run in site.runs(mac):
        assert run["state"] != "done"
        assert not any(v["complete"] for v in run["verifications"]), run


def assert_ends(
    site: Site, mac: str, state: str, reason: str | None = None, target: Path | None = None
) -> dict[str, Any]:
    """The end state of a fault-matrix case, read back through the API: the machine's last run is ``state``
    (``done`` or ``failed``), none of its runs is open, the machine is in the matching state; a failed run
    carries ``reason`` (in its reason and the machine's) and the machine boots the live environment again
    (a token, no network boot needed); a done run has exactly one verification, complete, of the planned
    digest, ``target`` holds the image and the next boot is the local disk. No run that is not done has a
    complete verification. Returns the last run."""
    runs = site.runs(mac)
    assert runs, f"{mac}: no run"
    assert all(r["finished"] is not None for r in runs), [(r["id"], r["state"]) for r in runs]
    for run in runs:
        if run["state"] != "done":
            assert not any(v["complete"] for v in run["verifications"]), run
    last = runs[-1]
    machine = site.machine(mac)
    assert (last["state"], machine["state"]) == (state, state), (last, machine)
    if state == "failed":
        assert reason is not None and reason in (last["reason"] or ""), last["reason"]
        assert reason in (machine["reason"] or ""), machine
        script = site.boot_script(mac)
        assert "provision.token=" in script, script  # the next boot images it again
        return last
    [verification] = last["verifications"]
    assert verification["complete"] and verification["read_back"] == "ok"
    assert last["digest"] == verification["digest"] == site.version.digest
    assert verification["chunks"] == verification["verified"] == site.data_chunks
    assert "local disk" in site.boot_script(mac)
    if target is not None:
        assert sha256_file(target, SIZE) == site.raw_sha
    return last


def wait_run(site: Site, mac: str, states: tuple[str, ...], timeout: float = 30.0) -> dict[str, Any]:
    """The machine's newest run once it is in one of ``states``."""

    def newest() -> dict[str, Any] | None:
        runs = site.runs(mac)
        return runs[-1] if runs and runs[-1]["state"] in states else None

    found = wait_for(newest, timeout, interval=0.05)
    assert found is not None, f"{mac}: no run in {states}: {site.runs(mac)}"
    return found


class WireFaults:
    """A real requests session whose chunk GETs can be tampered with: ``flip`` a byte of the body of the
    first GETs of one chunk, ``cut`` it (the body ends early), ``always`` corrupt one chunk, or run
    ``action`` before the ``at``-th chunk GET."""

    def __init__(self, digest: str = "", mode: str = "", times: int = 1) -> None:
        self.session = requests.Session()
        self.digest, self.mode, self.left = digest, mode, times
        self.lock = threading.Lock()
        self.at: tuple[int, Any] | None = None
        self.chunk_gets = 0

    def get(self, url: str, *, timeout: tuple[float, float], stream: bool) -> HttpResponse:
        tamper = False
        with self.lock:
            if "/chunks/" in url:
                self.chunk_gets += 1
                if self.at is not None and self.chunk_gets == self.at[0]:
                    self.at[1]()
                if self.digest and url.endswith(self.digest) and (self.mode == "always" or self.left > 0):
                    self.left -= 1
                    tamper = True
        response = self.session.get(url, timeout=timeout, stream=stream)
        if not tamper:
            return response
        body = response.content
        if self.mode == "cut":
            response.raw = _Cut(body[: len(body) // 2])
            setattr(response, "_content", False)  # noqa: B010 - make requests read the (cut) raw body again
            setattr(response, "_content_consumed", False)  # noqa: B010
        else:
            flipped = bytearray(body)
            flipped[len(flipped) // 2] ^= 0x55
            response._content = bytes(flipped)
        return response

    def close(self) -> None:
        self.session.close()


class _Cut:
    """A body that ends early with a connection error, as a cut cable does."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, amt: int, decode_content: bool = True) -> Iterator[bytes]:
        yield self.data
        raise requests.exceptions.ChunkedEncodingError("connection cut mid-body")

    def close(self) -> None:
        pass


def in_process(
    site: Site,
    tmp_path: Path,
    mac: str,
    wire: WireFaults | None = None,
    *,
    server: str | None = None,
    agent: dict[str, Any] | None = None,
    **over: Any,
) -> Outcome:
    """The agent in this process (``run_agent``) against ``server`` (default: the site), with ``wire`` as its
    chunk session, onto ``tmp_path/pc/vda`` (made unless ``disks_from`` is given); QUICK retries unless
    ``retry`` is given; ``over``: more AgentConfig fields, ``agent``: more Agent arguments (``run``...)."""
    session = wire or WireFaults()
    settings: dict[str, Any] = {"once": True, "hello_deadline": 60, "retry": QUICK, "probe_dir": SAMPLE_PROBE}
    settings.update(over)
    if "disks_from" not in settings:
        settings["disks_from"] = disks(tmp_path / "pc", ("vda", SIZE, None))
    cfg = AgentConfig(server=server or site.url, mac=mac, token=site.token(mac), **settings)
    try:
        return run_agent(cfg, chunk_session=lambda workers: session, **(agent or {}))
    finally:
        session.close()


def data_digest(site: Site, n: int) -> str:
    return [c.sha256 for c in site.version.index.chunks if c.sha256 is not None][n] or ""
