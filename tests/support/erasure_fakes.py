"""``FakeTools``: a fake ``Runner`` for the erasure's drive tools (hdparm, nvme-cli, sg3_utils, smartctl,
rtcwake) that answers each argv from captured samples and records every call. No subprocess, no mock library.

``FakeTools({"/dev/sda": SAMPLES / "erasure" / "intel-ssdsc2ct240a4"})``: each drive's device path maps to a
sample folder holding any of::

    hdparm-I.txt  hdparm-N.txt  hdparm-dco-identify.txt  nvme-id-ctrl.json  nvme-id-ns.json  sg_opcodes.txt
    smartctl.json

A query whose file is missing answers like a tool that cannot talk to the drive (exit status 1, a message
on stderr). The fake keeps the state a real drive would (per device): the user password set by
``--security-set-pass`` and cleared by a successful erase or ``--security-disable``; a locked sample
unlocked by ``--security-unlock``; the frozen state cleared by ``rtcwake`` (unless ``unfreezes=False``); the
HPA removed by ``-N pNATIVE``; a sanitize that runs for ``sanitize_polls`` status polls (in progress) before
it completes. ``hdparm -I`` reflects that state by
rewriting the sample's Security lines.

``overrides`` answer an argv, or every argv starting with a prefix (the longest prefix wins), with an
``Answer`` (returncode, stdout, stderr), a ``Path`` (its text, exit status 0), an exception to raise, or a
list of those used in turn (the last one repeats; None in it: the fake's own answer, from its samples and
state). ``.calls`` holds every argv; ``.timeouts`` the timeout
each was given.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Answer = tuple[int, str, str]
Reply = Answer | Path | BaseException
Override = Reply | Sequence[Reply | None]

_FILES = {
    ("hdparm", "-I"): "hdparm-I.txt",
    ("hdparm", "-N"): "hdparm-N.txt",
    ("hdparm", "--dco-identify"): "hdparm-dco-identify.txt",
    ("nvme", "id-ctrl"): "nvme-id-ctrl.json",
    ("nvme", "id-ns"): "nvme-id-ns.json",
    ("sg_opcodes",): "sg_opcodes.txt",
    ("smartctl", "-j", "-a"): "smartctl.json",
}
# version answers shaped like Debian 13's tools print them
VERSIONS: dict[tuple[str, ...], Answer] = {
    ("nvme", "version"): (0, "nvme version 2.13 (git 2.13)\nlibnvme version 1.13 (git 1.13)\n", ""),
    ("hdparm", "-V"): (0, "hdparm v9.65\n", ""),
    ("sg_inq", "--version"): (0, "", "2.36 20240304\n"),
    ("smartctl", "--version"): (0, "smartctl 7.4 2023-08-01 r5530 [x86_64-linux-6.12.0-amd64] (local build)\n", ""),
}


@dataclass
class _Drive:
    folder: Path | None
    password: str | None = None
    unfrozen: bool = False
    native_set: int | None = None  # -N pNATIVE given
    unlocked: bool = False  # --security-unlock with the drive's password (the sample's "locked" cleared)
    sanitizing: int | None = None  # polls left in progress; None: no sanitize started


def security_line(text: str, name: str, on: bool) -> str:
    """Rewrite hdparm's Security line ``[not]<TAB>name`` of ``text``."""
    pattern = re.compile(rf"^([ \t]*)(not[ \t]+)?({re.escape(name)})[ \t]*$", re.M)
    return pattern.sub(lambda m: f"\t\t{name}" if on else f"\tnot\t{name}", text, count=1)


@dataclass
class FakeTools:
    drives: Mapping[str, Path | None]
    overrides: Mapping[tuple[str, ...], Override] = field(default_factory=dict)
    unfreezes: bool = True
    sanitize_polls: int = 1
    calls: list[list[str]] = field(default_factory=list)
    timeouts: list[float | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.state = {dev: _Drive(folder) for dev, folder in self.drives.items()}
        self._used: dict[tuple[str, ...], int] = {}

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        assert isinstance(argv, list), "argv lists only"
        assert kwargs.get("capture_output") is True and kwargs.get("check") is False and "timeout" in kwargs
        assert kwargs["env"]["LC_ALL"] == "C"
        self.calls.append(list(argv))
        self.timeouts.append(kwargs.get("timeout"))
        reply = self._override(argv)
        if reply is None:
            reply = self.answer(argv)
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(reply, Path):
            reply = (0, reply.read_text(), "")
        code, out, err = reply
        return subprocess.CompletedProcess(argv, code, out.encode(), err.encode())

    def _override(self, argv: list[str]) -> Reply | None:
        matches = [key for key in self.overrides if tuple(argv[: len(key)]) == key]
        if not matches:
            return None
        key = max(matches, key=len)
        value = self.overrides[key]
        if isinstance(value, (tuple, Path, BaseException)):
            return value
        replies = list(value)
        used = self._used.get(key, 0)
        self._used[key] = used + 1
        return replies[min(used, len(replies) - 1)]

    def drive(self, argv: Sequence[str]) -> tuple[str, _Drive] | None:
        """The drive an argv names (an NVMe controller /dev/nvme0 names its namespaces' drive)."""
        for arg in argv:
            if arg in self.state:
                return arg, self.state[arg]
            for dev, state in self.state.items():
                if re.fullmatch(rf"{re.escape(arg)}(c\d+)?n\d+", dev):
                    return dev, state
        return None

    def _sample(self, drive: _Drive, name: str) -> Answer:
        path = drive.folder / name if drive.folder is not None else None
        if path is None or not path.is_file():
            return 1, "", f"no answer: {name} was not captured for this drive\n"
        return 0, path.read_text(), ""

    def answer(self, argv: list[str]) -> Answer:  # one branch per tool call, as the tools are
        key = tuple(argv)
        for prefix, version in VERSIONS.items():
            if key[: len(prefix)] == prefix:
                return version
        if argv[0] == "rtcwake":  # a suspend to RAM: the drives lose power, and come back unfrozen (or not)
            for state in self.state.values():
                state.unfrozen = state.unfrozen or self.unfreezes
            return 0, 'rtcwake: wakeup from "mem" using /dev/rtc0 at Sun Dec  6 23:10:05 2026\n', ""
        found = self.drive(argv[1:])
        if found is None:
            return 1, "", f"{argv[0]}: no such device in the fake\n"
        dev, drive = found
        if argv[:2] == ["hdparm", "-I"]:
            code, out, err = self._sample(drive, "hdparm-I.txt")
            if drive.unfrozen:
                out = security_line(out, "frozen", False)
            if drive.unlocked:
                out = security_line(out, "locked", False)
            return code, security_line(out, "enabled", drive.password is not None) if code == 0 else out, err
        if argv[:2] == ["hdparm", "-N"] and drive.native_set is not None:
            n = drive.native_set
            return 0, f"\n{dev}:\n max sectors   = {n}/{n}, HPA is disabled\n", ""
        if "-N" in argv and "--yes-i-know-what-i-am-doing" in argv:
            drive.native_set = int(argv[argv.index("-N") + 1].lstrip("p"))
            n = drive.native_set
            return (
                0,
                f"\n{dev}:\n setting max visible sectors to {n} (permanent)\n"
                f" max sectors   = {n}/{n}, HPA is disabled\n",
                "",
            )
        if "--security-unlock" in argv:  # a locked sample's password is provision's (an interrupted erase)
            drive.unlocked = True
            said = argv[argv.index("--security-unlock") + 1]
            return 0, f'security_password: "{said}"\n\n{dev}:\n Issuing SECURITY_UNLOCK command\n', ""
        if "--security-set-pass" in argv:
            drive.password = argv[argv.index("--security-set-pass") + 1]
            return 0, f'security_password: "{drive.password}"\n\n{dev}:\n Issuing SECURITY_SET_PASS command\n', ""
        if any(flag in argv for flag in ("--security-erase", "--security-erase-enhanced", "--security-disable")):
            drive.password = None
            return 0, f"\n{dev}:\n Issuing SECURITY command\n", ""
        if (
            argv[:2] == ["nvme", "sanitize"]
            or "--sanitize-block-erase" in argv
            or ("--sanitize-crypto-scramble" in argv)
            or argv[0] == "sg_sanitize"
        ):
            drive.sanitizing = self.sanitize_polls
            return 0, "", ""
        if argv[:2] == ["nvme", "sanitize-log"]:
            return 0, self._sanitize_log(drive), ""
        if argv[:2] == ["hdparm", "--sanitize-status"]:
            return 0, self._sanitize_status(dev, drive), ""
        if argv[0] == "sg_requests":
            return 0, self._requests(drive), ""
        for prefix, name in _FILES.items():
            if key[: len(prefix)] == prefix:
                return self._sample(drive, name)
        return 0, "", ""  # an action that succeeds (format, dco-restore ...)

    def _tick(self, drive: _Drive) -> bool:
        """True while the sanitize runs (one poll used)."""
        if drive.sanitizing:
            drive.sanitizing -= 1
            return True
        return False

    def _sanitize_log(self, drive: _Drive) -> str:
        running = self._tick(drive)
        started = drive.sanitizing is not None
        status = 2 if running else (1 if started else 0)
        words = {
            0: "NVM Subsystem has never been sanitized.",
            1: "Most Recent Sanitize Command Completed Successfully.",
            2: "A Sanitize Operation is Currently in Progress.",
        }
        log = {"sprog": 32768 if running else 65535,
               "sstat": {"global_erased": 1 if started and not running else 0, "no_cmplted_passes": 1 if started else 0,
                         "status": f"({status}) {words[status]}"}, "cdw10_info": 0}  # fmt: skip
        return json.dumps({"nvme0": log}, indent=2) + "\n"

    def _sanitize_status(self, dev: str, drive: _Drive) -> str:
        head = f"\n{dev}:\nIssuing SANITIZE_STATUS command\nSanitize status:\n"
        if self._tick(drive):
            return head + "    State:    SD2 Sanitize operation In Process\n    Progress: 0x8000 (50%)\n"
        done = "    Last Sanitize Operation Completed Without Error\n" if drive.sanitizing is not None else ""
        return head + "    State:    SD0 Sanitize Idle\n" + done

    def _requests(self, drive: _Drive) -> str:
        return "Progress indication: 50.00% done\n" if self._tick(drive) else ""
