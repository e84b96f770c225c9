"""Post-install hooks on the wire: what the server sends the live environment to run one hook, and what comes
back. The server connects over SSH (its own key; the live environment's host key pinned from the hello) and
runs the one fixed command ``HOOK_COMMAND``; the job goes on its stdin as JSON, the result comes back on its
stdout as JSON. No shell string is ever built from a hook's name, parameters or facts: they travel as data
and reach the hook as environment variables.

A hook runs where its header says: ``target`` in a chroot of the written root file system (mounted by the
runner, ``/dev``, ``/proc``, ``/sys`` and ``/run`` bound, everything unmounted after, also after a failure or
a timeout), ``live`` in the live environment itself (``PROVISION_ROOT`` is then the mounted target root).
``server`` hooks never travel: the server runs them with the machine's record as JSON on stdin.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from provision.wire.schema import Message, rule

# the only command the server runs over SSH: a constant (the live environment keeps provision in /opt/provision)
HOOK_COMMAND = "PYTHONPATH=/opt/provision PYTHONDONTWRITEBYTECODE=1 python3 -m provision.agent.hookrun"
TARGET_RECORD = "/run/provision/target"  # the agent writes the disk it imaged here (its device path)
ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
MAX_SCRIPT = 1 << 20  # bytes of one hook's script
MAX_OUTPUT = 64 << 10  # bytes of output kept per hook: the first and last halves when longer
MAX_ANSWER = 4 * MAX_OUTPUT  # bytes of the runner's JSON answer the server reads
MAX_TIMEOUT = 6 * 3600

Where = Literal["target", "live"]
# the bundle hook's last line: what apt installed or changed, as ``NAME=VERSION`` words after ``bundle=NAME``
INSTALLED_MARKER = "PROVISION-BUNDLE-INSTALLED"


def installed_packages(output: str) -> dict[str, str] | None:
    """The packages a bundle hook's output says it installed (package -> version), from its last
    INSTALLED_MARKER line; None when there is none (another hook, or a bundle hook that failed before)."""
    lines = [line for line in output.splitlines() if line.startswith(INSTALLED_MARKER + " ")]
    if not lines:
        return None
    packages: dict[str, str] = {}
    for word in lines[-1].split()[1:]:
        name, sep, version = word.partition("=")
        if sep and name != "bundle" and name and version:
            packages[name.split(":", 1)[0]] = version
    return packages


def _env(value: dict[str, str]) -> dict[str, str]:
    bad = [k for k in value if not ENV_NAME.fullmatch(k)]
    if bad:
        raise ValueError(f"not environment variable names: {', '.join(repr(k[:40]) for k in bad[:5])}")
    if any("\0" in v for v in value.values()):
        raise ValueError("a value holds a NUL byte, which no environment can carry")
    return value


@dataclass(frozen=True)
class HookJob(Message):
    """One hook to run now: its script (any interpreter its #! line names), where, its environment (the
    parameters as PROVISION_PARAM_<NAME>, PROVISION_MAC, PROVISION_RUN ...), and its time limit."""

    name: str = field(metadata=rule(pattern=r"[a-z0-9][a-z0-9_-]{0,63}"))
    where: Where
    script: str = field(metadata=rule(max_length=MAX_SCRIPT))
    timeout: int = field(metadata=rule(ge=1))
    env: dict[str, str] = field(default_factory=dict, metadata=rule(max_length=256, check=_env))
    device: str | None = None  # the disk to mount the root of (None: the one in TARGET_RECORD)


@dataclass(frozen=True)
class HookResult(Message):
    """What running the hook did. ``output``: stdout and stderr interleaved as they came, cut to MAX_OUTPUT
    (``output_bytes`` says how much there was); ``exit_code`` None when it did not exit by itself (timed out,
    killed); ``error``: why the runner could not run it at all (no target, mount failed ...)."""

    name: str
    exit_code: int | None
    timed_out: bool
    seconds: float = field(metadata=rule(ge=0))
    output: str = ""
    output_bytes: int = field(default=0, metadata=rule(ge=0))
    unmounted: bool = True  # everything the runner mounted is unmounted again
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.timed_out and self.exit_code == 0
