"""Faults to inject on the imaging path (the fault-matrix tests, tests/functional/test_fault_*.py).

- ``Proxy(port)``: a TCP proxy on 127.0.0.1, port 0, in front of ``provision serve`` on ``port``; the agent is
  given ``proxy.url``. ``cut(seconds)``: every open connection is reset and new ones are reset at once for
  that long (a cable pulled, a switch rebooting); ``stall(seconds)``: nothing is forwarded for that long,
  connections stay open and the bytes wait (a link that stops, then comes back: TCP holds them).
  ``chunk_delay``: seconds each chunk request waits before it is forwarded (a slow link, so that a test can
  act mid-write). ``hold_chunks(after)``: the next ``after`` chunk requests are forwarded, the ones after
  wait until ``release_chunks()``; ``held`` counts those waiting (one proxy per PC: each agent held mid-write
  however fast it writes, so that a test acts while all are in flight). ``on_request(line)``: called with each
  request line (``GET /chunks/... HTTP/1.1``) before it is forwarded. ``requests`` counts the request lines
  by ``METHOD /path-prefix`` (``chunk_gets``).
- ``StoreLock(db)``: another process (``sqlite3`` in a child Python) holding the write lock of the server's
  state store (``BEGIN IMMEDIATE``) until ``release()`` or ``seconds`` have passed; ``hold()`` returns once
  the lock is held.
- ``tmpfs(path, size)``: a tmpfs of ``size`` bytes mounted on ``path`` (root only; the test is skipped where
  mounting is refused), unmounted afterwards.
- ``fill(folder)``: a file that takes every free byte of ``folder``'s file system (a disk full); removing it
  frees them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.wait import wait_for

RECV = 1 << 16


class Proxy:
    """See the module docstring. Threads: one accepting, two per connection; all daemons, all ended by
    ``close()`` (which resets what is still open)."""

    def __init__(self, port: int) -> None:
        self.upstream = ("127.0.0.1", port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.chunk_delay = 0.0
        self._hold_after: int | None = None
        self._released = threading.Event()
        self._released.set()
        self._held = 0
        self.on_request: Callable[[str], None] | None = None
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._cut_until = 0.0
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def chunk_gets(self) -> int:
        return self.requests["GET /chunks"]

    # ------------------------------------------------------------------------------------------ faults
    def cut(self, seconds: float) -> None:
        """Reset every open connection, and every new one for ``seconds``."""
        with self._lock:
            self._cut_until = time.monotonic() + seconds
            victims = list(self._open)
        for sock in victims:
            _abort(sock)

    def stall(self, seconds: float) -> None:
        """Forward nothing for ``seconds`` (connections kept open, bytes held), then go on."""
        self._flowing.clear()
        timer = threading.Timer(seconds, self._flowing.set)
        timer.daemon = True
        timer.start()

    def hold_chunks(self, after: int) -> None:
        """Forward ``after`` more chunk requests; the next wait for ``release_chunks()``."""
        with self._lock:
            self._hold_after = self.chunk_gets + after
        self._released.clear()

    def release_chunks(self) -> None:
        with self._lock:
            self._hold_after = None
        self._released.set()

    @property
    def held(self) -> int:
        """How many chunk requests are waiting for ``release_chunks()`` now."""
        with self._lock:
            return self._held

    def close(self) -> None:
        self._closed = True
        self._flowing.set()
        self._released.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self._lock:
            victims = list(self._open)
        for sock in victims:
            _abort(sock)
        self._thread.join(timeout=5)

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ plumbing
    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), name="fault-proxy-conn", daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        """The client's first bytes are read (and their request line seen) before the server is dialled, so
        ``on_request`` sees requests that arrive while the server is down."""
        with self._lock:
            self._open.add(client)
        upstream: socket.socket | None = None
        forwarded = False
        try:
            self._flowing.wait()
            first = b"" if self._cut() else client.recv(RECV)
            if first:
                self._saw(first)
                self._flowing.wait()
            if not first or self._cut():
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:  # the server is down: the client sees its connection reset, as it would
                return
            with self._lock:
                self._open.add(upstream)
            upstream.sendall(first)
            forwarded = True
            back = threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True)
            back.start()
            self._pump(client, upstream, True)
            back.join(timeout=60)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(client)
                if upstream is not None:
                    self._open.discard(upstream)
            if forwarded:  # a cut set SO_LINGER 0 already: its close resets, a normal end closes
                client.close()
            else:  # refused: reset, as a cut or a server that is down does
                _reset(client)
            if upstream is not None:
                upstream.close()

    def _cut(self) -> bool:
        return self._closed or time.monotonic() < self._cut_until

    def _pump(self, src: socket.socket, dst: socket.socket, requests: bool) -> None:
        try:
            while data := src.recv(RECV):
                if requests:
                    self._saw(data)
                self._flowing.wait()
                if self._cut():
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:  # either side ending ends both
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _saw(self, data: bytes) -> None:
        for line in data.split(b"\r\n"):
            method, _, rest = line.partition(b" ")
            if method not in (b"GET", b"POST", b"HEAD") or not rest.startswith(b"/"):
                continue
            text = line.decode("ascii", errors="replace")
            path = text.split(" ")[1]
            with self._lock:
                self.requests[f"{method.decode()} /{path.split('/')[1]}"] += 1
                after = self._hold_after
                hold = path.startswith("/chunks/") and after is not None and self.chunk_gets > after
                self._held += hold
            if self.on_request is not None:
                self.on_request(text)
            if hold:
                self._released.wait()
                with self._lock:
                    self._held -= 1
            if path.startswith("/chunks/") and self.chunk_delay:
                time.sleep(self.chunk_delay)


def _abort(sock: socket.socket) -> None:
    """Shut a connection down, waking the threads blocked on it; its owner's close then sends an RST
    (SO_LINGER 0). Only the owner closes it, so no thread ever uses a descriptor number reused meanwhile."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _reset(sock: socket.socket) -> None:
    """Close a connection this thread owns with an RST."""
    _abort(sock)
    sock.close()


_HOLDER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    time.sleep(0.05)
db.execute("ROLLBACK")
"""


class StoreLock:
    """Another process holding the write lock of the SQLite database ``db`` (see the module docstring)."""

    def __init__(self, db: Path, seconds: float = 60.0) -> None:
        self.db, self.seconds = db, seconds
        self.proc: subprocess.Popen[str] | None = None
        self.held_at: float | None = None

    def hold(self) -> StoreLock:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(self.db), str(self.seconds)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "locked":
            self.release()
            raise AssertionError(f"the lock holder did not take the lock: {line!r}")
        self.held_at = time.monotonic()
        return self

    def release(self) -> None:
        """End the holder (by its PID) if it still runs; its lock goes with it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def wait(self, timeout: float = 120.0) -> None:
        """Until the holder let go by itself (``seconds`` after ``hold()``)."""
        assert self.proc is not None
        self.proc.wait(timeout=timeout)
        self.release()

    def __enter__(self) -> StoreLock:
        return self.hold()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def tmpfs(path: Path, size: int) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes on ``path`` (made if missing); skipped where it cannot be mounted."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        done = subprocess.run(["umount", str(path)], capture_output=True, text=True)
        if done.returncode != 0:  # something still holds it open: detach it now, freed when closed
            subprocess.run(["umount", "-l", str(path)], capture_output=True, text=True)


def fill(folder: Path) -> Path:
    """A file in ``folder`` taking every free byte of its file system (written until ENOSPC)."""
    path = folder / "filler"
    block = b"\0" * (1 << 16)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            try:
                os.write(fd, block)
            except OSError:
                if len(block) == 1:
                    break
                block = block[: len(block) // 2]
    finally:
        os.close(fd)
    assert wait_for(lambda: os.statvfs(folder).f_bavail == 0, 2.0), "the file system still has room"
    return path
