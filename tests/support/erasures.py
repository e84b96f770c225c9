"""Erasure reports for tests: ``drive(...)`` a wire ``DriveErasure`` as an agent reports it (ok, or failed with
a reason: its verification found data, or the method failed before any read-back), ``report(token, ...)``."""

from __future__ import annotations

from provision.wire.erasure import METHODS, DriveErasure, ErasureReport, Skipped, Smart, Verification

STARTED = "2026-12-06T23:10:00Z"
ENDED = "2026-12-06T23:12:30Z"


def drive(
    device: str = "sda",
    *,
    ok: bool = True,
    method: str = "ata-security-erase-enhanced",
    serial: str | None = "WD-WCC4N1234567",
    verified: bool | None = None,
    reason: str | None = None,
    size: int = 500_107_862_016,
) -> DriveErasure:
    """A drive's erasure: ``verified`` None (the default) reads back like ``ok``; False with ``ok`` False: the
    verification found data; ``reason`` defaults to a plain one when not ok."""
    read_back = ok if verified is None else verified
    found = [] if read_back else [4096, 8192, 1 << 30]
    check = Verification(method="sample", pattern="zeros", ok=read_back, bytes_checked=25 * 2**30, samples=25600,
                         mismatches=len(found), first_mismatches=found)  # fmt: skip
    return DriveErasure(
        device=device, size_bytes=size, interface="nvme" if device.startswith("nvme") else "sata",
        method=method, category=METHODS[method], ok=ok, started=STARTED, ended=ENDED,  # type: ignore[arg-type]
        verification=check, vendor="WDC", model="WD5000AAKX", serial=serial, firmware="15.01H15",
        rotational=not device.startswith("nvme"), tools={"hdparm": "9.65", "provision": "0.1"},
        commands=[["hdparm", "--user-master", "u", "--security-erase-enhanced", "p", f"/dev/{device}"]],
        smart=Smart(passed=True, power_on_hours=12000),
        reason=None if ok else reason or "3 of 25600 sampled blocks still hold data (first at byte 4096)",
    )  # fmt: skip


def report(token: str, *drives: DriveErasure, skipped: tuple[tuple[str, str], ...] = ()) -> ErasureReport:
    return ErasureReport(token=token, drives=list(drives), skipped=[Skipped(d, r) for d, r in skipped])
