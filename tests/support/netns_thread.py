"""A network namespace of the test's own, entered by one worker thread (functional multicast tests).

- ``Netns``: ``ip netns add pvmc-<pid>-<n>`` with ``lo`` up, multicast on and ``239.0.0.0/8`` routed to it
  (only inside that namespace, never on the host); ``run(fn, *args)`` calls ``fn`` in a thread that entered the
  namespace (``setns(2)`` with ``CLONE_NEWNET`` changes one thread only), so the sockets it makes and the
  processes it starts (``provision serve``) live there; ``close()`` kills what runs inside by PID, then
  deletes the namespace. ``cleanup_stale()``: namespaces of test runs whose process is gone.
- ``skip_reason()``: why the test cannot run here (not root, no ``ip``), or None.
- ``netns`` (a pytest fixture; import it into the test module): a ``Netns`` for the test, stale namespaces
  cleaned first, closed afterwards whatever happens; ``namespace()``: the same as a context manager.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import pytest

from provision.lab.host import pid_alive

PREFIX = "pvmc"
NAME_RE = re.compile(rf"^{PREFIX}-(\d+)-(\d+)$")
CLONE_NEWNET = 0x40000000
_counter = itertools.count(1)
T = TypeVar("T")


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root: it makes a network namespace (ip netns add)"
    if shutil.which("ip") is None:
        return "needs iproute2's ip"
    return None


def ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def _kill_inside(name: str) -> None:
    for _ in range(3):
        done = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=30, check=False)
        pids = [int(p) for p in done.stdout.split() if p.isdigit()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def cleanup_stale() -> None:
    """Delete the namespaces of earlier test runs whose process is gone (a run killed before its cleanup)."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30, check=False)
    for line in listing.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        found = NAME_RE.match(name)
        if found and not pid_alive(int(found.group(1))):
            _kill_inside(name)
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30, check=False)


class Netns:
    def __init__(self) -> None:
        self.name = f"{PREFIX}-{os.getpid()}-{next(_counter)}"
        ip("netns", "add", self.name)
        try:
            ip("-n", self.name, "link", "set", "lo", "up")
            ip("-n", self.name, "link", "set", "lo", "multicast", "on")
            ip("-n", self.name, "route", "add", "239.0.0.0/8", "dev", "lo")
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name, initializer=self._enter)
            self.run(lambda: None)  # the thread is in the namespace, or this raises
        except BaseException:
            self.close()
            raise

    def _enter(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {self.name}: {os.strerror(ctypes.get_errno())}")
        finally:
            os.close(fd)

    def run(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        """``fn(*args, **kwargs)`` in the namespace's thread (its sockets and child processes are inside)."""
        return self._pool.submit(fn, *args, **kwargs).result()

    def close(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=True)
        _kill_inside(self.name)
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True, timeout=30, check=False)


@contextmanager
def namespace() -> Iterator[Netns]:
    """A ``Netns`` (the namespaces of dead test runs deleted first), closed on the way out whatever happens."""
    cleanup_stale()
    ns = Netns()
    try:
        yield ns
    finally:
        ns.close()


@pytest.fixture
def netns() -> Iterator[Netns]:
    """The test's own network namespace (``namespace()``)."""
    with namespace() as ns:
        yield ns
