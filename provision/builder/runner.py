"""How a build runs its commands: argument lists only, every command and its output in the build log.

``Runner`` runs for real. ``RecordingRunner`` runs nothing: it records each ``Command`` and answers with
canned output, so the whole command sequence of a build can be checked without root or tools (unit
tests). Both stop at a chosen step when told to (``fail_at``): tests inject a failure mid-build that way.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from provision.builder.errors import BuildInterrupted, StepFailed, ToolMissing

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 3600.0
# The Debian package of each program a build may run (for the "install X" hint).
TOOL_PACKAGES: Mapping[str, str] = {
    "mmdebstrap": "mmdebstrap",
    "sfdisk": "fdisk",
    "umount": "mount",
    "mount": "mount",
    "losetup": "mount",
    "unshare": "util-linux",
    "rsync": "rsync",
    "dumpe2fs": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "mkfs.fat": "dosfstools",
    "mke2fs": "e2fsprogs",
    "e2fsck": "e2fsprogs",
    "mmd": "mtools",
    "mcopy": "mtools",
    "grub-mkimage": "grub-common",
    "chroot": "coreutils",
    "apt-get": "apt",
    "dpkg-query": "dpkg",
    "systemctl": "systemd",
}


@dataclass(frozen=True)
class Command:
    """One command of a build."""

    step: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)  # added to the environment
    input: str | None = None


@dataclass(frozen=True)
class Completed:
    command: Command
    returncode: int
    stdout: str
    stderr: str
    seconds: float


class BuildLog:
    """The build log file: timestamped lines, each command with its output. Thread-safe."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._handle: IO[str] | None = None
        self._lock = threading.Lock()
        self._started = time.monotonic()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = path.open("a", encoding="utf-8")

    def write(self, text: str) -> None:
        if self._handle is None:
            return
        stamp = f"[{time.monotonic() - self._started:8.1f}] "
        with self._lock:
            for line in text.rstrip("\n").splitlines() or [""]:
                self._handle.write(stamp + line + "\n")
            self._handle.flush()

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None


class Runner:
    """Runs build commands for real: no shell, output captured (or streamed into the log when long)."""

    def __init__(self, *, fail_at: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.fail_at = fail_at  # raise BuildInterrupted when this step starts (tests: injected failure)
        self.timeout = timeout
        self.image = ""
        self.log = BuildLog(None)
        self.commands: list[Command] = []

    def bind(self, image: str, build_log: BuildLog) -> None:
        self.image = image
        self.log = build_log

    def step(self, name: str) -> None:
        """A step starts: the injected failure fires here."""
        if self.fail_at == name:
            raise BuildInterrupted(
                f"image {self.image}: build stopped at step {name} on request", image=self.image, step=name
            )

    def run(
        self,
        step: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
        check: bool = True,
        stream: bool = False,
        on_line: Callable[[str], None] | None = None,
        timeout: float | None = None,
    ) -> Completed:
        """Run ``argv``; StepFailed (with the stderr tail) when it exits non-zero and ``check``.

        ``stream``: stdout and stderr go line by line into the build log (and ``on_line``) instead of being
        held in memory; the last lines are kept for the error.
        """
        command = Command(step, tuple(argv), dict(env or {}), input)
        self.commands.append(command)
        self.log.write("$ " + " ".join(command.argv) + (f"   (env {dict(command.env)})" if command.env else ""))
        started = time.monotonic()
        done = self._execute(command, stream=stream, on_line=on_line, timeout=timeout or self.timeout)
        done = Completed(command, done.returncode, done.stdout, done.stderr, time.monotonic() - started)
        if not stream:
            for name, text in (("stdout", done.stdout), ("stderr", done.stderr)):
                if text.strip():
                    self.log.write(f"  {name}:\n" + "\n".join("    " + line for line in text.splitlines()[-200:]))
        self.log.write(f"  exit {done.returncode} after {done.seconds:.1f} s")
        if check and done.returncode != 0:
            raise StepFailed(
                image=self.image,
                step=step,
                argv=command.argv,
                returncode=done.returncode,
                stderr=done.stderr or done.stdout,
                log=str(self.log.path or ""),
            )
        return done

    def _execute(
        self, command: Command, *, stream: bool, on_line: Callable[[str], None] | None, timeout: float
    ) -> Completed:
        tool = command.argv[0]
        if shutil.which(tool) is None:
            raise ToolMissing(tool, TOOL_PACKAGES.get(tool, tool), image=self.image, step=command.step)
        env = {**os.environ, "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive", **command.env}
        if not stream:
            try:
                done = subprocess.run(
                    list(command.argv),
                    input=command.input,
                    capture_output=True,
                    text=True,
                    env=env,
                    timeout=timeout,
                    check=False,
                    errors="replace",
                )
            except subprocess.TimeoutExpired as exc:
                partial = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
                return Completed(command, -1, "", f"timed out after {timeout:.0f} s: {partial}", timeout)
            return Completed(command, done.returncode, done.stdout, done.stderr, 0.0)
        return self._stream(command, env, on_line, timeout)

    def _stream(
        self, command: Command, env: Mapping[str, str], on_line: Callable[[str], None] | None, timeout: float
    ) -> Completed:
        last: collections.deque[str] = collections.deque(maxlen=200)
        proc = subprocess.Popen(
            list(command.argv),
            stdin=subprocess.PIPE if command.input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=dict(env),
            errors="replace",
            start_new_session=True,
        )
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            if command.input is not None and proc.stdin is not None:
                proc.stdin.write(command.input)
                proc.stdin.close()
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip("\n")
                last.append(line)
                self.log.write("  | " + line)
                if on_line is not None:
                    on_line(line)
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            timer.cancel()
            if proc.stdout is not None:
                proc.stdout.close()  # else the pipe is closed only by the garbage collector (ResourceWarning)
        output = "\n".join(last)
        return Completed(command, code, "", output, 0.0)


Responder = Callable[[Command], str]


class RecordingRunner(Runner):
    """Runs nothing: records every command; ``responder`` gives each one's stdout (default empty).

    ``fail_on`` makes the first command of that program fail with exit code 1 and ``fail_stderr``, as a
    broken tool would.
    """

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        fail_at: str | None = None,
        fail_on: str | None = None,
        fail_stderr: str = "injected failure",
    ) -> None:
        super().__init__(fail_at=fail_at)
        self.responder = responder or (lambda command: "")
        self.fail_on = fail_on
        self.fail_stderr = fail_stderr
        self.steps: list[str] = []

    def step(self, name: str) -> None:
        self.steps.append(name)
        super().step(name)

    def _execute(
        self, command: Command, *, stream: bool, on_line: Callable[[str], None] | None, timeout: float
    ) -> Completed:
        if self.fail_on is not None and command.argv[0] == self.fail_on:
            self.fail_on = None
            return Completed(command, 1, "", self.fail_stderr, 0.0)
        return Completed(command, 0, self.responder(command), "", 0.0)

    def argvs(self, program: str | None = None) -> list[tuple[str, ...]]:
        """The recorded command lines (of one program only, if given)."""
        return [c.argv for c in self.commands if program is None or c.argv[0] == program]
