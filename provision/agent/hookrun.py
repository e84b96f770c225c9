"""``python3 -m provision.agent.hookrun``: run one post-install hook in the live environment (the one command
the server runs over SSH, ``provision.wire.hooks.HOOK_COMMAND``).

It reads one ``HookJob`` as JSON on stdin (at most ``MAX_JOB`` bytes), runs it and writes one ``HookResult`` as
JSON on stdout; exit status 0 when the result was written (the result says whether the hook succeeded), 2
for a job it refuses (not UTF-8, not JSON, not the contract, a script without ``#!``, a value no environment
can carry: the result then has ``error``), 1 when the result could not be written. Never a traceback.

- The disk is ``job.device``, else the path the agent wrote to ``TARGET_RECORD`` after its verified write.
- Its root file system is mounted with ``/dev``, ``/proc``, ``/sys`` and ``/run`` (``hookmount.TargetRoot``).
- ``target``: the script goes to ``/run/provision-hook/<name>`` (0700) on the target's fresh ``/run`` tmpfs
  (so it leaves no trace in the installed system) and runs as ``chroot ROOT /run/provision-hook/<name>``.
  ``live``: the script goes to the runner's private folder and runs in the live environment with
  ``PROVISION_ROOT`` set to the mounted root. Either way: an argument list, a clean environment
  (``hookproc.hook_env``), its own process group, the job's timeout (``hookproc.supervise``).
- Everything is unmounted, the loop device detached and the folder removed after, also after a failure, a
  timeout, an exception or SIGTERM/SIGHUP/SIGINT (which stop the hook's group first).
- The result's ``output`` holds the hook's stdout and stderr interleaved, cut as ``hookproc.Output`` says,
  then the runner's notes (timeout, kills, what could not be unmounted); the whole answer stays within
  ``MAX_ANSWER`` bytes, what the server reads (the output is cut further if needed). ``seconds``: the whole job,
  mounting and unmounting included.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from provision.agent.hookmount import MOUNT_BASE, MOUNT_TIMEOUT, USERS_WAIT, HookMountError, TargetRoot
from provision.agent.hookproc import DRAIN, KILL_GRACE, Output, Spawn, group_running, hook_env, supervise
from provision.agent.inventory import Runner
from provision.agent.rootpart import NODE_TIMEOUT
from provision.errors import FatalError, InvalidPayload, ProvisionError
from provision.wire.hooks import MAX_ANSWER, TARGET_RECORD, HookJob, HookResult
from provision.wire.schema import clean_text

log = logging.getLogger(__name__)

MAX_JOB = 16 << 20  # bytes of one job on stdin: a 1 MiB script and the environment, JSON-escaped
MAX_RECORD = 4096  # bytes of TARGET_RECORD
MAX_ERROR = 4000  # characters of the result's error
SCRIPT_DIR = "/run/provision-hook"  # inside the target: on the fresh /run tmpfs
EXIT_RESULT, EXIT_NO_RESULT, EXIT_BAD_JOB = 0, 1, 2
_NAME = re.compile(HookJob.__dataclass_fields__["name"].metadata["wire"].pattern)


class BadJob(FatalError):
    """The job on stdin is not one the runner can run; ``problems`` lists what is wrong."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message, problems=problems or [message])
        self.problems = problems or [message]


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _fs_encodable(value: str, what: str) -> str | None:
    """Why ``value`` cannot become bytes for execve (non-UTF-8 bytes travel as U+DC80-U+DCFF), or None."""
    try:
        os.fsencode(value)
    except UnicodeEncodeError as exc:
        return f"{what}: character {exc.start} (U+{ord(value[exc.start]):04X}) cannot be encoded"
    return None


def read_job(data: bytes) -> HookJob:
    """The job in ``data``; ``BadJob`` says every problem."""
    if len(data) > MAX_JOB:
        raise BadJob(f"the job is over {MAX_JOB} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadJob(f"the job is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        raw = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise BadJob(f"the job is not JSON: {str(exc)[:200]}") from None
    try:
        job = HookJob.from_dict(raw)
    except InvalidPayload as exc:
        problems = [f"{p['field'] or '(job)'}: {p['message']}"[:300] for p in exc.problems[:20]]
        raise BadJob(f"the job does not follow the contract: {'; '.join(problems)}", problems) from None
    problems = []
    if not job.script.startswith("#!"):
        problems.append("script: does not start with #! (its interpreter)")
    problems += [p for p in [_fs_encodable(job.script, "script")] if p]
    problems += [p for k, v in job.env.items() if (p := _fs_encodable(v, f"env.{k}"))]
    if job.device is not None and (not job.device.startswith("/") or "\0" in job.device or len(job.device) > 4096):
        problems.append("device: not an absolute path")
    if problems:
        raise BadJob(f"the job cannot run: {'; '.join(problems)}", problems)
    return job


def job_name(data: bytes) -> str:
    """The job's name for the result of a refused job, when it has a valid one; else ''."""
    try:
        name = json.loads(data.decode("utf-8"), parse_constant=_no_constant).get("name")
    except (ValueError, RecursionError, AttributeError):
        return ""
    return name if isinstance(name, str) and _NAME.fullmatch(name) else ""


def read_record(record: Path) -> str:
    """The disk the agent imaged, from ``record`` (HookMountError when there is none)."""
    try:
        with record.open("rb") as f:
            data = f.read(MAX_RECORD + 1)
    except OSError as exc:
        message = f"no disk named by the job, and {record} cannot be read ({exc.strerror}): no verified write yet?"
        raise HookMountError("(no disk)", message, record=str(record)) from None
    device = os.fsdecode(data.strip())
    if len(data) > MAX_RECORD or not device.startswith("/") or "\n" in device:
        raise HookMountError("(no disk)", f"{record} does not hold one absolute path", record=str(record))
    return device


@dataclass(frozen=True)
class Settings:
    """Where the runner works and what it calls (tests replace these)."""

    run: Runner = subprocess.run
    spawn: Spawn = subprocess.Popen
    killpg: Callable[[int, int], None] = os.killpg
    kill: Callable[[int, int], None] = os.kill
    clock: Callable[[], float] = time.monotonic
    record: Path = Path(TARGET_RECORD)
    base: Path = MOUNT_BASE
    mountinfo: Path = Path("/proc/self/mountinfo")
    proc_root: Path = Path("/proc")
    sys_root: Path = Path("/sys")
    dev_root: Path = Path("/dev")
    node_timeout: float = NODE_TIMEOUT
    tool_timeout: float = MOUNT_TIMEOUT
    users_wait: float = USERS_WAIT
    grace: float = KILL_GRACE
    drain: float = DRAIN
    stopped: Callable[[], int | None] = field(default=lambda: None)
    group_alive: Callable[[int], bool] = group_running


def _write_script(folder: Path, name: str, script: str) -> Path:
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o700)
    with os.fdopen(fd, "wb") as f:
        f.write(os.fsencode(script))
    return path


def _describe(exc: BaseException, argv: list[str] | None) -> str:
    if isinstance(exc, OSError) and argv is not None:
        what = f"cannot start {argv[0]}" + (f" for {argv[-1]}" if len(argv) > 1 else "")
        why = exc.strerror or str(exc)
        hint = " (is its #! line right?)" if exc.errno == 8 else ""  # ENOEXEC
        return f"{what}: {why}{hint}"
    if isinstance(exc, ProvisionError):
        return str(exc)
    return f"the hook runner failed: {type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class Ran:
    """A job's result (``output`` filled: the hook's, cut, then the runner's notes), with what made it."""

    result: HookResult
    output: Output | None = None
    notes: tuple[str, ...] = ()

    def answer(self) -> bytes:
        """The result as JSON; its output is cut further until the whole fits ``MAX_ANSWER`` bytes."""
        keep: int | None = None
        while True:
            result = self.result
            if self.output is not None:
                result = replace(result, output=self.output.text([clean_text(n) for n in self.notes], keep))
            data = json.dumps(result.to_dict(), ensure_ascii=False).encode("utf-8")
            if len(data) <= MAX_ANSWER or self.output is None or keep == 0:
                return data
            keep = (self.output.half if keep is None else keep) // 2


def run_job(job: HookJob, settings: Settings | None = None) -> Ran:
    """Run ``job``: never raises for what happens to the hook or the target (the result's ``error`` says it)."""
    s = settings or Settings()
    started = s.clock()
    output, notes = Output(), list[str]()
    exit_code, timed_out, error, argv = None, False, None, None
    target: TargetRoot | None = None
    try:
        disk = job.device or read_record(s.record)
        target = TargetRoot(
            disk, run=s.run, base=s.base, mountinfo=s.mountinfo, proc_root=s.proc_root, sys_root=s.sys_root,
            dev_root=s.dev_root, node_timeout=s.node_timeout, tool_timeout=s.tool_timeout,
            users_wait=s.users_wait, kill=s.kill,
        )  # fmt: skip
        with target:
            if job.where == "target":
                _write_script(target.root / SCRIPT_DIR.lstrip("/"), job.name, job.script)
                argv = ["chroot", str(target.root), f"{SCRIPT_DIR}/{job.name}"]
                env = hook_env(job.env, "/")
            else:
                assert target.workdir is not None
                argv = [str(_write_script(target.workdir / "script", job.name, job.script))]
                env = hook_env(job.env, str(target.root))
            sig = s.stopped()
            if sig is not None:
                raise HookMountError(disk, f"the runner got signal {sig} before the hook started: not run")
            log.info("hook %s (%s): %s", job.name, job.where, " ".join(argv))
            done = supervise(
                argv, env, job.timeout, output, clock=s.clock, spawn=s.spawn, killpg=s.killpg, grace=s.grace,
                drain=s.drain, stopped=s.stopped, group_alive=s.group_alive,
            )  # fmt: skip
            exit_code, timed_out, notes = done.exit_code, done.timed_out, done.notes
            if done.stopped_by is not None:
                error = f"the hook runner was stopped by signal {done.stopped_by}: the hook was killed"
    except Exception as exc:  # every failure becomes the result's error: never a traceback
        error = _describe(exc, argv)
        if not isinstance(exc, ProvisionError | OSError):
            log.exception("hook %s", job.name)
    unmounted = True if target is None else target.unmounted
    if target is not None:
        notes += target.warnings
    seconds = round(max(0.0, s.clock() - started), 3)
    error = None if error is None else clean_text(error)[:MAX_ERROR]
    text = output.text([clean_text(n) for n in notes])
    result = HookResult(job.name, exit_code, timed_out, seconds, text, output.total, unmounted, error)
    log.info("hook %s: exit code %s, timed out %s, %d bytes of output, unmounted %s%s", job.name, exit_code,
             timed_out, output.total, unmounted, f", error: {error}" if error else "")  # fmt: skip
    return Ran(result, output, tuple(notes))


class _Signals:
    """SIGTERM, SIGHUP and SIGINT recorded (not raised): the runner stops the hook, then cleans up."""

    def __init__(self) -> None:
        self.got: int | None = None

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, self._handler)

    def _handler(self, number: int, frame: Any) -> None:
        self.got = self.got or number

    def __call__(self) -> int | None:
        return self.got


def main(argv: list[str] | None = None, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> int:
    """Read the job, run it, write the result; the exit status (see the module's docstring)."""
    args = sys.argv[1:] if argv is None else argv
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    logging.basicConfig(level=logging.INFO, format="%(asctime)s hookrun %(levelname)s: %(message)s", stream=sys.stderr)
    signals = _Signals()
    signals.install()
    code, data = EXIT_RESULT, b""
    try:
        data = stdin.read(MAX_JOB + 1)
        if args:
            raise BadJob(f"takes no arguments (the job comes on stdin), got {len(args)}")
        job = read_job(data)
    except (BadJob, OSError) as exc:
        name = job_name(data)
        ran = Ran(HookResult(name, None, False, 0.0, error=clean_text(str(exc))[:MAX_ERROR]))
        log.error("refused: %s", ran.result.error)
        code = EXIT_BAD_JOB
    else:
        ran = run_job(job, Settings(stopped=signals))
    try:
        stdout.write(ran.answer())
        stdout.flush()
    except OSError as exc:
        log.error("cannot write the result: %s", exc)
        return EXIT_NO_RESULT
    return code


if __name__ == "__main__":
    sys.exit(main())
