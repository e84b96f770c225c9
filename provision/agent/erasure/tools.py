"""Running the drive tools (hdparm, nvme-cli, sg3_utils, smartctl, rtcwake) for the erasure: argv lists only,
``LC_ALL=C`` (the parsers read English), captured output, a timeout, ``check=False``; a missing tool or a
timeout is an answer (``Ran.returncode`` None), never an exception. ``MethodFailed`` is the erasure method's
failure, with every fact.

``tool_versions`` asks each tool its version once (``nvme version``, ``hdparm -V``, ``sg_inq --version``,
``smartctl --version``'s first line) for the drive's record.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from provision.agent.errors import AgentError
from provision.agent.inventory import Runner

__all__ = ["QUERY_TIMEOUT", "MethodFailed", "Ran", "run_tool", "tool_versions"]

log = logging.getLogger(__name__)

QUERY_TIMEOUT = 60.0  # seconds an identify / log / status query may take (a dying drive can hang)
MAX_KEPT = 256 * 1024  # characters of one output kept for the record


@dataclass(frozen=True)
class Ran:
    """One tool call: its argv, exit status (None: missing or timed out), stdout and stderr as text."""

    argv: list[str]
    returncode: int | None
    stdout: str
    stderr: str
    meaning: str = ""  # why it has no exit status ("not installed", "timed out after N s")

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def aborted(self) -> bool:
        """hdparm's sign that the drive aborted the command although hdparm exits 0: "SG_IO: bad/missing sense
        data" (the sense data carries the ATA ABRT status). Seen on QEMU's AHCI disk for every security
        command (tests/samples/erasure/qemu-sata): an exit status 0 alone proves nothing."""
        return "bad/missing sense data" in self.stderr

    def tail(self) -> str:
        """The last line of stderr (else stdout): what the tool said last."""
        for text in (self.stderr, self.stdout):
            lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
            if lines:
                return lines[-1][:500]
        return self.meaning


def _text(data: object) -> str:
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")[:MAX_KEPT]
    return data[:MAX_KEPT] if isinstance(data, str) else ""


def run_tool(run: Runner, argv: Sequence[str], *, timeout: float = QUERY_TIMEOUT) -> Ran:
    """Run ``argv`` (a list, never a shell string) through ``run`` and return what happened."""
    args = [str(a) for a in argv]
    env = {**os.environ, "LC_ALL": "C"}
    try:
        done = run(args, capture_output=True, timeout=timeout, check=False, env=env)
    except FileNotFoundError:
        return Ran(args, None, "", "", meaning=f"{args[0]} is not installed")
    except subprocess.TimeoutExpired as exc:
        return Ran(args, None, _text(exc.stdout), _text(exc.stderr), meaning=f"timed out after {timeout:.0f} s")
    except OSError as exc:
        return Ran(args, None, "", "", meaning=f"could not be started: {exc.strerror or exc}")
    return Ran(args, done.returncode, _text(done.stdout), _text(done.stderr))


class MethodFailed(AgentError):
    """An erasure method (or its preparation) failed: ``facts`` hold the device, the method, the argv, the
    exit code, the stderr tail and the reason in plain words (what happened, what to do)."""

    def __init__(
        self, device: str, method: str, reason: str, ran: Ran | None = None,
        commands: list[list[str]] | None = None, password_left: bool = False, **facts: object,
    ) -> None:  # fmt: skip
        said = f" ({' '.join(ran.argv)}: {_status(ran)}: {ran.tail()})" if ran is not None else ""
        super().__init__(
            f"{device}: {method} failed: {reason}{said}",
            device=device, method=method, reason=reason,
            argv=ran.argv if ran else None, returncode=ran.returncode if ran else None,
            stderr=ran.tail() if ran else None, commands=commands or [], password_left=password_left, **facts,
        )  # fmt: skip
        self.device, self.method, self.reason = device, method, reason
        self.commands = commands or []  # every argv the method ran, up to and with the failing one
        self.argv = ran.argv if ran else None
        self.returncode = ran.returncode if ran else None
        self.stderr_tail = ran.tail() if ran else None
        self.password_left = password_left  # an ATA erase password set and not removed: the drive will lock


def _status(ran: Ran) -> str:
    return f"exit status {ran.returncode}" if ran.returncode is not None else ran.meaning or "no exit status"


_VERSIONS: dict[str, list[str]] = {
    "nvme-cli": ["nvme", "version"],
    "hdparm": ["hdparm", "-V"],
    "sg3_utils": ["sg_inq", "--version"],
    "smartmontools": ["smartctl", "--version"],
}


def tool_versions(run: Runner, tools: Sequence[str]) -> dict[str, str]:
    """``tool -> version line`` for each of ``tools`` (keys of ``_VERSIONS``) that answers."""
    found: dict[str, str] = {}
    for tool in tools:
        ran = run_tool(run, _VERSIONS[tool], timeout=10.0)
        text = (ran.stdout.strip() or ran.stderr.strip()).splitlines()
        if ran.returncode is not None and text:  # sg_inq --version prints to stderr with exit status 0
            found[tool] = text[0].strip()[:200]
    return found
