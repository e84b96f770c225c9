"""Certificates for tests: drives erased as the agent reports them (one NVMe purged, one SATA disk overwritten),
a machine, a certificate, and a fresh signing key in a temporary folder."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

from provision.certificates.model import (
    BatchCertificate,
    Certificate,
    CertifiedDrive,
    HookResult,
    ImagingVerification,
    MachineSummary,
    Workshop,
)
from provision.store import Run, Store
from provision.wire.api import VerificationReport
from provision.wire.erasure import DriveErasure, ErasureReport, Skipped, Smart, Verification

WORKSHOP = Workshop("Atelier Réemploi Test")
NVME_SERIAL = "S4EWNX0N123456"
SATA_SERIAL = "WD-WCC4N7JXK2LP"


def nvme_drive(**changes: Any) -> DriveErasure:
    drive = DriveErasure(
        device="nvme0n1", size_bytes=256_060_514_304, interface="nvme", method="nvme-sanitize-crypto",
        category="purge", ok=True, started="2026-12-06T21:00:00Z", ended="2026-12-06T21:00:42Z",
        verification=Verification(method="sample", pattern="changed", ok=True, bytes_checked=12_834_000_000,
                                  samples=12_206),
        vendor="Samsung", model="SSD 970 EVO Plus 250GB", serial=NVME_SERIAL, firmware="2B2QEXM7",
        rotational=False, tools={"nvme-cli": "2.4", "provision": "0.1.0"},
        commands=[["nvme", "sanitize", "/dev/nvme0", "--sanact=4"]],
        smart=Smart(passed=True, power_on_hours=8123, media_errors=0, percentage_used=7),
    )  # fmt: skip
    return replace(drive, **changes)


def sata_drive(**changes: Any) -> DriveErasure:
    drive = DriveErasure(
        device="sda", size_bytes=500_107_862_016, interface="sata", method="overwrite", category="clear", ok=True,
        started="2026-12-06T21:00:00Z", ended="2026-12-06T22:31:10Z",
        verification=Verification(
            method="full", pattern="zeros", ok=True, bytes_checked=500_107_862_016, samples=476_940
        ),
        vendor="WDC", model="WD5000AAKX-08U6AA0", serial=SATA_SERIAL, rotational=True,
        tools={"hdparm": "9.65", "provision": "0.1.0"}, fallback="the drive is frozen and could not be unfrozen",
        smart=Smart(passed=True, power_on_hours=31000, reallocated=0, pending=0),
    )  # fmt: skip
    return replace(drive, **changes)


def failed_drive() -> DriveErasure:
    verification = Verification(method="full", pattern="zeros", ok=False, bytes_checked=1 << 30, mismatches=3,
                                first_mismatches=[4096])  # fmt: skip
    return sata_drive(ok=False, verification=verification,
                      reason="3 blocks still held data after the overwrite (first at byte 4096)")  # fmt: skip


def machine(mac: str = "52:54:00:12:34:56", **changes: Any) -> MachineSummary:
    summary = MachineSummary(
        mac=mac, asset_id="poste-a1b2c3", hostname="poste-a1b2c3", vendor="Dell Inc.", model="OptiPlex 7050",
        serial="7XK2L3J", cpu="Intel(R) Core(TM) i5-7500 CPU @ 3.40GHz", cpu_cores=4, ram_mb=8192, disk_count=2,
        disk_gb=500, disk_transport=["nvme", "sata"],
    )  # fmt: skip
    return replace(summary, **changes)


def certificate(mac: str = "52:54:00:12:34:56", lot: str | None = "Banque-2026-12", **changes: Any) -> Certificate:
    drives = [CertifiedDrive(nvme_drive(), "marie", "2026-12-06T22:31:11Z"),
              CertifiedDrive(sata_drive(), "marie", "2026-12-06T22:31:11Z")]  # fmt: skip
    imaging = ImagingVerification(run="run-1", image="educ", label="20261201-020000-0123456789ab", root_digest="0" * 64,
                                  chunks=620, verified=620, read_back="ok", complete=True)  # fmt: skip
    cert = Certificate(
        id=str(uuid.uuid4()), issued="2026-12-06T23:00:00Z", software="provision 0.1.0", workshop=WORKSHOP,
        machine=machine(mac), run="run-1", drives=drives, imaging=imaging, lot=lot,
        hooks=[HookResult("hostname", True, 0), HookResult("locale", True, 0, "target")],
    )  # fmt: skip
    return replace(cert, **changes)


def batch(lot: str = "Banque-2026-12", count: int = 2) -> BatchCertificate:
    machines = [certificate(f"52:54:00:12:34:{n:02x}", lot, machine=machine(f"52:54:00:12:34:{n:02x}",
                asset_id=f"poste-{n:02d}", serial=f"SN{n:05d}")) for n in range(count)]  # fmt: skip
    return BatchCertificate(id=str(uuid.uuid4()), issued="2026-12-06T23:00:00Z", software="provision 0.1.0",
                            workshop=WORKSHOP, lot=lot, machines=machines)  # fmt: skip


DIGEST = "d" * 64
LABEL = "20261201-020000-dddddddddddd"
FACTS = {
    "vendor": "Dell Inc.", "model": "OptiPlex 7050", "serial": "7XK2L3J",
    "cpu_model": "Intel(R) Core(TM) i5-7500 CPU @ 3.40GHz", "cpu_cores": 4, "ram_mb": 8192, "disk_count": 2,
    "disk_gb": 500, "disk_transport": ["nvme", "sata"],
}  # fmt: skip


def seed(
    store: Store, mac: str, *drives: DriveErasure, lot: str | None = None, image: bool = True, verified: bool = True,
    hostname: str | None = None, skipped: tuple[tuple[str, str], ...] = (),
) -> Run:  # fmt: skip
    """A machine in ``store`` with one run: ``drives`` erased (recorded by operator marie), then, with ``image``,
    the tiny image written and (``verified``) read back complete."""
    store.seen(mac)
    if lot is not None:
        store.set_lot(mac, lot, "marie")
    erase = {"erase": {"method": "auto", "only": not image}} if drives else {}
    plan = {"image": "tiny", **erase} if image else erase
    run = store.create_run(mac, recipe="r", image="tiny" if image else "", label=LABEL if image else "",
                           digest=DIGEST if image else "", plan=plan, facts=FACTS, erase_only=not image)  # fmt: skip
    if hostname:
        store.claim_hostname(run.id, hostname)
    if drives:
        left = [Skipped(device, reason) for device, reason in skipped]
        store.record_erasure(run.id, ErasureReport(token="t" * 32, drives=list(drives), skipped=left), "marie")
    if image and verified:
        report = VerificationReport(digest=DIGEST, chunks=12, verified=12, read_back_ok=True, bytes_written=12 << 22,
                                    seconds=2.0, mean_rate=float(24 << 20))  # fmt: skip
        store.record_verification(run.id, report)
    return run
