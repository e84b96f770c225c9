"""Accounting: the servers' CPU (/proc and a cgroup), UDP drops, and killing processes by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()  # [0] is field 3 (state): field n is at n - 3


def process_tree(roots: Iterable[int]) -> set[int]:
    """`roots` and all their live descendants."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                parents[int(entry.name)] = int(fields[1])
    tree = {pid for pid in roots if pid in parents}
    grown = True
    while grown:
        more = {pid for pid, ppid in parents.items() if ppid in tree and pid not in tree}
        tree |= more
        grown = bool(more)
    return tree


def proc_cpu_seconds(roots: Iterable[int]) -> float:
    """utime+stime+cutime+cstime of `roots` and their live descendants (children reaped by them included)."""
    ticks = 0
    for pid in process_tree(roots):
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += sum(int(fields[i]) for i in (11, 12, 13, 14))
    return ticks / CLK_TCK


class CpuCgroup:
    """A cgroup the servers of one run start in; its counter includes every process that ever ran in it."""

    def __init__(self, path: Path, version: int) -> None:
        self.path = path
        self.version = version

    @classmethod
    def create(cls, name: str) -> CpuCgroup | None:
        """v1 cpuacct or v2, whichever this machine has and lets root write; None when neither."""
        candidates = [
            (Path("/sys/fs/cgroup/cpuacct"), 1, "cpuacct.usage"),
            (Path("/sys/fs/cgroup"), 2, "cgroup.controllers"),
            (Path("/sys/fs/cgroup/unified"), 2, "cgroup.controllers"),
        ]
        for root, version, marker in candidates:
            if not (root / marker).exists():
                continue
            path = root / name
            try:
                path.mkdir()
            except OSError:
                continue
            group = cls(path, version)
            try:
                group.usage_seconds()
            except (OSError, ValueError):
                group.remove()
                continue
            return group
        return None

    def enter(self) -> None:
        """Move the calling process in (a Popen preexec_fn: the server and all it forks are counted)."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def usage_seconds(self) -> float:
        if self.version == 1:
            return int((self.path / "cpuacct.usage").read_text()) / 1e9
        for line in (self.path / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value) / 1e6
        raise ValueError(f"no usage_usec in {self.path}/cpu.stat")

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def remove(self) -> None:
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)
        print(f"boot_burst: could not remove cgroup {self.path}", file=sys.stderr)


def udp_rcvbuf_errors(snmp: str) -> int:
    """RcvbufErrors of the Udp line of a namespace's /proc/net/snmp: datagrams dropped on a full socket."""
    rows = [line.split() for line in snmp.splitlines() if line.startswith("Udp:")]
    if len(rows) < 2 or "RcvbufErrors" not in rows[0]:
        return 0
    return int(rows[1][rows[0].index("RcvbufErrors")])


def udp_drops_by_port(table: str, ports: Iterable[int]) -> dict[str, int]:
    """Drops per local port of the UDP sockets open now (/proc/net/udp); the rest under "other"."""
    wanted = set(ports)
    out: dict[str, int] = {}
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 13:
            continue
        port = int(fields[1].rpartition(":")[2], 16)
        key = str(port) if port in wanted else "other"
        out[key] = out.get(key, 0) + int(fields[-1])
    return out


def _pid_alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def kill_pids(pids: Iterable[int], timeout: float = 3.0) -> None:
    """SIGTERM, then SIGKILL, each of these processes (ours: servers we started and their children)."""
    pending = [p for p in pids if _pid_alive(p)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pending:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            pending = [p for p in pending if _pid_alive(p)]
            time.sleep(0.05)
        if not pending:
            return
