"""The outcome of ``provision lab demo``: each PC's milestones and server records, the table and summary.

``run_demo`` (demo.py) returns a ``DemoResult``; the CLI prints ``result_table`` and ``summary_line``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provision.lab.follow import (
    BOOT_FILE,
    CALLBACK,
    DHCP,
    FIRSTBOOT,
    LIVE_UP,
    LOCAL_DISK,
    PLAN,
    POWER_ON,
    REBOOT,
    VERIFIED,
)

RECAP = (DHCP, BOOT_FILE, LIVE_UP, PLAN, VERIFIED, REBOOT, POWER_ON, LOCAL_DISK, FIRSTBOOT, CALLBACK)


def mb(size: int | float, unit: int = 1_000_000) -> str:
    """``size`` bytes in MB (or MiB with ``unit=1 << 20``), no decimals."""
    return f"{size / unit:.0f}"


def on_off(value: bool | None) -> str:
    """Secure Boot as reported: on, off, or n/a (a BIOS PC has none)."""
    return "n/a" if value is None else "on" if value else "off"


@dataclass(frozen=True)
class RunRecord:
    """A run as the server recorded it (``GET /api/v1/runs?mac=``)."""

    id: str
    state: str
    recipe: str | None
    image: str
    label: str
    digest: str  # the planned image version's root digest
    verified_digest: str | None  # the digest of a complete verification of a done run, else None
    bytes_written: int
    mean_rate: float | None  # bytes per second over the image's whole size (holes included)
    erased: tuple[str, ...] = ()  # each drive's erasure record in words (erasure_line)

    @classmethod
    def from_api(cls, run: dict[str, Any]) -> RunRecord:
        verifications: list[dict[str, Any]] = run.get("verifications") or []
        complete = [v for v in verifications if v.get("complete") and v.get("digest") == run["digest"]]
        verified = str(complete[-1]["digest"]) if complete and run["state"] == "done" else None
        rate = run.get("mean_rate")
        return cls(
            str(run["id"]),
            str(run["state"]),
            None if run.get("recipe") is None else str(run["recipe"]),
            str(run["image"]),
            str(run["label"]),
            str(run["digest"]),
            verified,
            int(run.get("bytes_written") or 0),
            None if rate is None else float(rate),
            tuple(erasure_line(e) for e in run.get("erasures") or []),
        )


def erasure_line(drive: dict[str, Any]) -> str:
    """A drive's erasure record (``GET /api/v1/runs``) in words: ``vda (serial S): overwrite, NIST clear, sample
    read-back of 26 MB: ok``."""
    check = drive.get("verification") or {}
    read = f"{check.get('method', '?')} read-back of {mb(int(check.get('bytes_checked') or 0))} MB"
    serial = f" (serial {drive['serial']})" if drive.get("serial") else ""
    result = "ok" if drive.get("ok") else f"NOT OK: {drive.get('reason') or 'no reason'}"
    return f"{drive.get('device')}{serial}: {drive.get('method')}, NIST {drive.get('category')}, {read}: {result}"


@dataclass(frozen=True)
class PCResult:
    """How one demo PC did, from its serial console and from the server's records."""

    name: str
    firmware_kind: str  # bios | uefi | uefi-secureboot, as the demo built it
    mac: str
    milestones: dict[str, float]  # label (provision.lab.follow) -> seconds since its first power-on
    error: str | None = None  # why it did not get through
    failed_phase: str | None = None  # imaging | own disk
    state: str | None = None  # the server's machine state
    boots: int | None = None  # boot scripts/configs the server issued it
    firmware: str | None = None  # from its hello: "bios" or "uefi"
    secure_boot: bool | None = None
    kernel: str | None = None
    run: RunRecord | None = None
    firstboot: str | None = None  # the label its installed system reported on its first boot
    hostname: str | None = None  # the host name its installed system reported (the hostname hook's)
    serial_logs: tuple[Path, ...] = field(default=())

    @property
    def imaged(self) -> bool:
        """Its run is done with a complete verification of the planned digest."""
        return self.run is not None and self.run.state == "done" and self.run.verified_digest == self.run.digest

    @property
    def called_back(self) -> bool:
        """It booted its own disk, whose first-boot callback the server recorded."""
        return CALLBACK in self.milestones and self.firstboot is not None

    @property
    def ok(self) -> bool:
        return self.error is None and self.imaged and self.called_back

    def reason(self) -> str:
        """Why it is not ok (first line), or ``ok``."""
        if self.error is not None:
            return self.error.splitlines()[0]
        if not self.imaged:
            return f"not imaged (run {self.run.state if self.run else 'missing'})"
        if not self.called_back:
            return "no first-boot callback recorded"
        return "ok"


@dataclass(frozen=True)
class DemoResult:
    """The demo's outcome: every PC, the lab, the image served, timings, the server's exit and problems."""

    pcs: tuple[PCResult, ...]
    namespace: str
    server_url: str
    image_label: str
    digest: str  # the tiny image's root digest
    setup_seconds: float  # boot root, live environment, image, recipes
    seconds: float  # from the start of the demo until every PC was done (without --keep-running's wait)
    server_exit: int | None = None
    server_problems: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return bool(self.pcs) and all(pc.ok and pc.run and pc.run.digest == self.digest for pc in self.pcs)

    def failures(self) -> list[str]:
        """One line per PC that did not get through: its name and why."""
        return [f"{r.name}: {r.reason()}" for r in self.pcs if not r.ok]


def _seconds(result: PCResult, label: str) -> str:
    seconds = result.milestones.get(label)
    return f"{seconds:.1f} s" if seconds is not None else "-"


def milestone_table(result: DemoResult) -> list[str]:
    """The main milestones (rows) of every PC (columns), in seconds since the PC's first power-on; the
    network boots' details are in the progress lines."""
    rows = [("MILESTONE (s)", *(r.name for r in result.pcs))]
    for label in RECAP:
        cells = [f"{r.milestones[label]:.1f}" if label in r.milestones else "-" for r in result.pcs]
        rows.append((label, *cells))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join([row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))])
        for row in rows
    ]


def result_table(result: DemoResult) -> list[str]:
    """The final table, one row per PC: firmware and Secure Boot from its hello, recipe, run state, verified
    digest and MB/s from the server's run record, seconds to imaged and to the callback from its own disk, and the
    host name the installed system reported (the hostname hook's)."""
    rows = [
        ("MAC", "PC", "FIRMWARE", "SECURE BOOT", "RECIPE", "RUN", "VERIFIED", "MB/S", "IMAGED", "CALLBACK", "HOST NAME")
    ]
    for r in result.pcs:
        run = r.run
        rows.append(
            (
                r.mac,
                r.name,
                r.firmware or "-",
                on_off(r.secure_boot) if r.firmware else "-",
                (run.recipe or "-") if run else "-",
                run.state if run else "-",
                run.verified_digest[:12] if run and run.verified_digest else "-",
                f"{run.mean_rate / 1e6:.0f}" if run and run.mean_rate else "-",
                _seconds(r, VERIFIED) if r.imaged else "failed",
                _seconds(r, CALLBACK) if r.ok else "failed",
                r.hostname or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


def summary_line(result: DemoResult) -> str:
    """One line: how many PCs were imaged and called back from their own disk, and how long it took."""
    good = sum(r.ok for r in result.pcs)
    verdict = "OK" if result.ok else "FAILED"
    return (
        f"{verdict}: {good} of {len(result.pcs)} PCs imaged with {result.image_label} (root digest "
        f"{result.digest[:12]}, verified) and booted from their own disk to the first-boot callback "
        f"({result.seconds:.0f} s from start, set-up {result.setup_seconds:.0f} s)"
    )
