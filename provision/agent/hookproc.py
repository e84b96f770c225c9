"""One hook's process: its clean environment, its output kept within bounds, its time limit.

- ``hook_env``: nothing of the runner's environment (an SSH session's, the agent's) reaches the hook: ``PATH``
  (Debian's default for root), ``HOME=/root``, ``LANG=C.UTF-8``, then the job's variables (the hook's
  parameters as ``PROVISION_PARAM_<NAME>``, ``PROVISION_MAC`` ...), then ``PROVISION_ROOT``, which the runner
  owns: the mounted target root for a ``live`` hook, ``/`` for a ``target`` hook (so one script can use
  ``$PROVISION_ROOT/etc/...`` in both). Values are passed to ``execve`` as they are: never parsed, split or
  spliced into a command line.
- ``Output``: stdout and stderr (one pipe) as they came; past ``MAX_OUTPUT`` the first and the last halves
  are kept with a marker saying how many bytes were cut between them; ``total`` counts every byte.
- ``supervise``: runs the argv in its own session and process group (``start_new_session``), stdin from
  ``/dev/null``, umask 022, and reads the pipe as data comes. At the timeout (or when the runner is told to
  stop) the whole group gets SIGTERM, then SIGKILL ``grace`` seconds later; the exit code is then ``None``.
  Processes the hook leaves behind in its group when it exits are stopped the same way, so nothing of a hook
  outlives it (they would keep the target busy). Whatever happens, nothing of the group is left running
  when it returns.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provision.wire.hooks import MAX_OUTPUT

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # Debian's for root
BASE_ENV = {"PATH": DEFAULT_PATH, "HOME": "/root", "LANG": "C.UTF-8"}
KILL_GRACE = 3.0  # seconds between SIGTERM and SIGKILL to the hook's process group
DRAIN = 2.0  # seconds to wait for the pipe's end once the hook's group is gone
NOTE_ROOM = 4096  # characters of MAX_OUTPUT kept for the cut marker and the runner's notes
READ_SIZE = 64 << 10
POLL = 0.2  # seconds between checks of the clock while the hook is quiet

Spawn = Callable[..., "subprocess.Popen[bytes]"]


def hook_env(job_env: Mapping[str, str], provision_root: str) -> dict[str, str]:
    """The hook's whole environment: the defaults, the job's variables, ``PROVISION_ROOT``."""
    return {**BASE_ENV, **job_env, "PROVISION_ROOT": provision_root}


class Output:
    """Bytes of the hook's pipe: the first ``half`` kept, then the last ``half``; ``total`` counts all."""

    def __init__(self, limit: int = MAX_OUTPUT) -> None:
        self.half = max(0, (limit - NOTE_ROOM) // 2)
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.half - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > self.half:
                del self.tail[: len(self.tail) - self.half]

    def text(self, notes: Sequence[str] = (), keep: int | None = None) -> str:
        """The output as text (invalid UTF-8 replaced), cut to ``keep`` bytes at each end (default ``half``)
        with a marker of what was cut, then the runner's ``notes``, one ``[provision-hookrun: ...]`` line each."""
        keep = self.half if keep is None else min(keep, self.half)
        head = bytes(self.head[:keep])
        tail = bytes(self.tail[max(0, len(self.tail) - keep) :]) if len(self.head) >= keep else b""
        cut = self.total - len(head) - len(tail)
        text = head.decode("utf-8", errors="replace")
        if cut:
            text += (
                f"\n[provision-hookrun: {cut} bytes of output cut here: {self.total} bytes in all, the first "
                f"{len(head)} and the last {len(tail)} kept]\n"
            )
        text += tail.decode("utf-8", errors="replace")
        if notes:
            text += "" if not text or text.endswith("\n") else "\n"
            lines = "".join(f"[provision-hookrun: {note[:1000]}]\n" for note in notes)
            room = NOTE_ROOM - 200  # the cut marker's
            text += lines if len(lines) <= room else lines[: room - 40] + "\n[provision-hookrun: more notes cut]\n"
        return text


@dataclass
class Finished:
    """How the hook's process ended: ``exit_code`` only when it exited by itself (not killed by the runner,
    not by a signal); ``stopped_by``: the signal that stopped the runner, if one did; ``notes``: what the
    runner had to do (timeout, SIGKILL, left-over processes, a signal)."""

    exit_code: int | None
    timed_out: bool
    seconds: float
    stopped_by: int | None = None
    notes: list[str] = field(default_factory=list)


def _signal_group(killpg: Callable[[int, int], None], group: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        killpg(group, sig)


def group_running(group: int, proc_root: Path = Path("/proc")) -> bool:
    """Whether a process of the group still runs. Zombies (dead, waiting for their parent, init for the
    hook's orphans, to reap them) do not count."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text(errors="replace")
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()  # after "PID (COMM) ": state, ppid, pgrp ...
        if len(fields) > 2 and fields[2] == str(group) and fields[0] != "Z":
            return True
    return False


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def supervise(
    argv: Sequence[str], env: Mapping[str, str], timeout: float, output: Output, *, cwd: str = "/",
    clock: Callable[[], float] = time.monotonic, spawn: Spawn = subprocess.Popen,
    killpg: Callable[[int, int], None] = os.killpg, grace: float = KILL_GRACE, drain: float = DRAIN,
    stopped: Callable[[], int | None] = lambda: None, group_alive: Callable[[int], bool] = group_running,
) -> Finished:  # fmt: skip
    """Run ``argv`` (a list: no shell) with exactly ``env``, feeding ``output``, within ``timeout`` seconds.
    Raises ``OSError`` when it cannot start (no such program, not executable, E2BIG)."""
    proc = spawn(
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(env),
        cwd=cwd, start_new_session=True, close_fds=True, umask=0o022,
    )  # fmt: skip
    assert proc.stdout is not None
    group, fd = proc.pid, proc.stdout.fileno()
    os.set_blocking(fd, False)
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    started = clock()
    state: dict[str, Any] = {"term_at": None, "kill_at": None}
    done = Finished(None, False, 0.0)
    eof, drain_from, returncode = False, None, None

    def escalate(now: float, why: str) -> None:
        """SIGTERM to the group now (with ``why``), SIGKILL ``grace`` seconds later."""
        if state["term_at"] is None:
            state["term_at"] = now
            done.notes.append(why)
            _signal_group(killpg, group, signal.SIGTERM)
        elif state["kill_at"] is None and now >= state["term_at"] + grace:
            state["kill_at"] = now
            done.notes.append(f"still running {grace:g} s after SIGTERM: SIGKILL to the process group")
            _signal_group(killpg, group, signal.SIGKILL)

    try:
        while True:
            now = clock()
            returncode = proc.poll()
            if returncode is None:
                sig = stopped()
                if sig is not None and state["term_at"] is None:
                    done.stopped_by = sig
                    escalate(now, f"the runner got {_signal_name(sig)}: SIGTERM to the hook's process group")
                elif now >= started + timeout and state["term_at"] is None:
                    done.timed_out = True
                    escalate(now, f"timed out after {timeout:g} s: SIGTERM to the hook's process group")
                elif state["term_at"] is not None:
                    escalate(now, "")
            else:
                alive = group_alive(group)
                if alive:
                    escalate(now, "processes the hook started were still running when it exited: SIGTERM to them")
                gone = not alive or (state["kill_at"] is not None and now >= state["kill_at"] + grace)
                if gone and eof:
                    break
                if gone:
                    drain_from = now if drain_from is None else drain_from
                    if now >= drain_from + drain:
                        done.notes.append("the output pipe stayed open after the hook's processes ended "
                                          "(held by a process outside its group): stopped reading")  # fmt: skip
                        break
            if eof:  # the pipe is closed: wait for the processes only
                if returncode is None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(POLL)
                else:
                    time.sleep(POLL)
                continue
            if poller.poll(int(POLL * 1000)):
                try:
                    data = os.read(fd, READ_SIZE)
                except BlockingIOError:
                    continue
                if data:
                    output.feed(data)
                else:
                    eof = True
                    poller.unregister(fd)
    finally:
        if proc.poll() is None or group_alive(group):  # an exception: nothing of the hook stays
            _signal_group(killpg, group, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace + 1)
        proc.stdout.close()
    done.seconds = round(clock() - started, 3)
    by_itself = returncode is not None and not done.timed_out and done.stopped_by is None
    if by_itself and returncode is not None and returncode < 0:
        done.notes.append(f"killed by {_signal_name(-returncode)}")
    elif by_itself:
        done.exit_code = returncode
    return done
