"""What a certificate states, gathered from the server's records: ``gather`` (one machine) and ``gather_lot``
(a donor's delivery), and ``machine_summary`` (the machine as its facts describe it, also used by labels).

Which run a machine's certificate states: the one named, else the machine's last run with an erasure record or
an imaging verification. When any drive of that run was not erased and verified, or an internal drive of the PC
was left out, there is no certificate of erasure at all: ``NotErased`` names the drive, its serial and the
reason the agent gave. The disks left out that are not the PC's own (the live medium, removable media) are
stated as not covered, read from the store's record of the run's erasure.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any, Protocol

from provision import __version__
from provision.certificates.errors import CertificateError, NotErased, NothingToCertify
from provision.certificates.model import (
    BatchCertificate,
    Certificate,
    CertifiedDrive,
    HookResult,
    ImagingVerification,
    MachineSummary,
    Workshop,
    iso,
)
from provision.errors import InvalidPayload
from provision.facts.model import fact_int
from provision.store.records import ErasureRun, Event, HookRecord, Machine, Run, Verification
from provision.wire.erasure import DriveErasure, Skipped

log = logging.getLogger(__name__)

SOFTWARE = f"provision {__version__}"
DEFAULT_WORKSHOP = "provision"


class ErasureLike(Protocol):
    """One drive's erasure record (``provision.store.records.ErasureRecord``)."""

    @property
    def run_id(self) -> str: ...
    @property
    def mac(self) -> str: ...
    @property
    def operator(self) -> str: ...
    @property
    def recorded_at(self) -> float: ...
    @property
    def lot(self) -> str | None: ...
    @property
    def drive(self) -> DriveErasure: ...


class CertificateStore(Protocol):
    """What certificates read of ``provision.store.Store`` (and write: one ``certificate`` event per issue)."""

    def machine(self, mac: str) -> Machine | None: ...
    def machines(self) -> list[Machine]: ...
    def runs(self, mac: str | None = None) -> list[Run]: ...
    def run_facts(self, run_id: str) -> dict[str, Any]: ...
    def verifications(self, run_id: str) -> list[Verification]: ...
    def hook_results(self, run_id: str) -> list[HookRecord]: ...
    def events(self, mac: str | None = None, kind: str | None = None, limit: int = 1000) -> list[Event]: ...
    def erasures(
        self, *, mac: str | None = None, run: str | None = None, lot: str | None = None
    ) -> Sequence[ErasureLike]: ...
    def erasure_run(self, run_id: str) -> ErasureRun | None: ...
    def event(self, mac: str, kind: str, detail: dict[str, Any] | None = None) -> None: ...


def _text(value: Any) -> str | None:
    return str(value)[:256] if value not in (None, "") else None


def machine_summary(store: CertificateStore, machine: Machine, run: Run | None) -> MachineSummary:
    """The machine as the run's facts (else the machine's record) describe it; the asset id is the host name it
    was given, else its MAC."""
    facts = store.run_facts(run.id) if run is not None else {}
    transports = facts.get("disk_transport")
    return MachineSummary(
        mac=machine.mac,
        asset_id=machine.hostname or machine.mac,
        hostname=machine.hostname,
        vendor=_text(facts.get("vendor") or machine.vendor),
        model=_text(facts.get("model") or machine.product),
        serial=_text(facts.get("serial") or machine.serial),
        cpu=_text(facts.get("cpu_model")),
        cpu_cores=fact_int(facts.get("cpu_cores")),
        ram_mb=fact_int(facts.get("ram_mb")),
        disk_count=fact_int(facts.get("disk_count")),
        disk_gb=fact_int(facts.get("disk_gb")),
        disk_transport=[str(t)[:16] for t in transports[:16]] if isinstance(transports, list) else [],
    )


def imaging_of(store: CertificateStore, run: Run) -> ImagingVerification | None:
    """The run's imaging verification: its complete read-back of the run's image, else its last one."""
    if run.erase_only or not run.digest:
        return None
    found = store.verifications(run.id)
    complete = [v for v in found if v.complete and v.digest == run.digest]
    chosen = complete[-1] if complete else (found[-1] if found else None)
    if chosen is None:
        return None
    return ImagingVerification(
        run=run.id, image=run.image, label=run.label, root_digest=chosen.digest, chunks=chosen.chunks,
        verified=chosen.verified, read_back="ok" if chosen.read_back == "ok" else "failed", complete=chosen.complete,
    )  # fmt: skip


def skipped_of(store: CertificateStore, run: Run) -> list[Skipped]:
    """The disks the run's erasure left out, and why (the live medium, a removable drive, an internal drive it
    could not erase), as the store keeps them with the run's erasure. Never dropped: a list that does not read
    (an old record) is a CertificateError naming the run, not a certificate that forgets them."""
    whole = store.erasure_run(run.id)
    if whole is None:
        return []
    try:
        return [Skipped.from_dict(s) for s in whole.skipped]
    except InvalidPayload as exc:
        log.warning("%s: run %s: the disks its erasure left out do not read: %s", run.mac, run.id, exc.problems[:3])
        raise CertificateError(
            f"machine {run.mac}: the disks the erasure of run {run.id} left out do not read ({exc.problems[:3]}): no "
            "certificate that could leave them out; erase the machine again (re-image it from the dashboard)",
            mac=run.mac, run=run.id,
        ) from exc  # fmt: skip


def _stated_run(store: CertificateStore, mac: str, run_id: str | None) -> Run:
    runs = store.runs(mac)
    if run_id is not None:
        named = [r for r in runs if r.id == run_id]
        if not named:
            raise NothingToCertify(f"machine {mac} has no run {run_id[:64]!r}", mac=mac, run=run_id[:64])
        return named[0]
    for run in reversed(runs):
        if store.erasures(run=run.id) or store.verifications(run.id):
            return run
    raise NothingToCertify(f"machine {mac} has no run with an erasure or an imaging verification yet: nothing to "
                           "certify (erase or image it first)", mac=mac)  # fmt: skip


def _refuse_left_out(mac: str, run: Run, skipped: Sequence[Skipped]) -> None:
    internal = [s for s in skipped if s.internal]
    if not internal:
        return
    names = "; ".join(f"internal drive {s.device}: {s.reason}" for s in internal)
    raise NotErased(
        f"machine {mac}: no certificate of erasure, {len(internal)} internal drive(s) of the PC left out, not erased, "
        f"in run {run.id}: {names}. Free the drive (or take it out) and erase the PC again (re-image it).",
        mac=mac, run=run.id, device=internal[0].device, serial=None, reason=internal[0].reason,
    )  # fmt: skip


def _refuse_failed(mac: str, run: Run, records: Sequence[ErasureLike]) -> None:
    failed = [r.drive for r in records if not r.drive.ok]
    if not failed:
        return
    first = failed[0]
    names = "; ".join(
        f"drive {d.device} ({d.model or 'unknown model'}, serial {d.serial or 'unknown'}): {d.reason}" for d in failed
    )
    raise NotErased(
        f"machine {mac}: no certificate of erasure, {len(failed)} drive(s) not erased and verified in run {run.id}: "
        f"{names}. Erase it again (re-image it from the dashboard) or remove the drive.",
        mac=mac, run=run.id, device=first.device, serial=first.serial, reason=first.reason,
    )  # fmt: skip


def gather(
    store: CertificateStore, mac: str, *, run: str | None = None, workshop: str = DEFAULT_WORKSHOP,
    now: float | None = None,
) -> Certificate:  # fmt: skip
    """The certificate of machine ``mac``: its run ``run``, else its last run with an erasure or an imaging
    verification. NothingToCertify (404) without one; NotErased (409) when a drive of it was not erased."""
    machine = store.machine(mac)
    if machine is None:
        raise NothingToCertify(f"no machine {mac} in the server's records", mac=mac)
    chosen = _stated_run(store, mac, run)
    records = store.erasures(run=chosen.id)
    _refuse_failed(mac, chosen, records)
    skipped = skipped_of(store, chosen)
    _refuse_left_out(mac, chosen, skipped)
    drives = [CertifiedDrive(r.drive, r.operator, iso(r.recorded_at)) for r in records]
    lots = [r.lot for r in records if r.lot]
    hooks = [HookResult(h.name, h.ok, h.exit_code, h.place) for h in store.hook_results(chosen.id)]
    return Certificate(
        id=str(uuid.uuid4()), issued=iso(time.time() if now is None else now), software=SOFTWARE,
        workshop=Workshop(workshop), machine=machine_summary(store, machine, chosen), run=chosen.id, drives=drives,
        skipped=skipped if drives else [],
        imaging=imaging_of(store, chosen), hooks=hooks, lot=lots[-1] if lots else machine.lot,
    )  # fmt: skip


def lot_macs(store: CertificateStore, lot: str) -> list[str]:
    """The machines of a lot: those whose lot it is now, and those whose erasure was recorded under it."""
    macs = {m.mac for m in store.machines() if m.lot == lot}
    macs.update(r.mac for r in store.erasures(lot=lot))
    return sorted(macs)


def gather_lot(
    store: CertificateStore, lot: str, *, workshop: str = DEFAULT_WORKSHOP, now: float | None = None
) -> BatchCertificate:
    """The batch certificate of a donor's delivery: every drive of every machine of the lot, each erased and
    verified. NothingToCertify for an empty lot; NotErased naming every machine that has no certificate of
    erasure (none erased yet, or a drive that failed), so the whole delivery is fixed in one pass."""
    macs = lot_macs(store, lot)
    if not macs:
        raise NothingToCertify(f"no machine in lot {lot!r}", lot=lot)
    machines: list[Certificate] = []
    problems: list[str] = []
    for mac in macs:
        try:
            found = gather(store, mac, workshop=workshop, now=now)
        except (NotErased, NothingToCertify) as exc:
            problems.append(exc.message)
            continue
        if not found.erased:
            problems.append(f"machine {mac}: no erasure recorded in its last run {found.run}")
            continue
        machines.append(found)
    if problems:
        message = f"lot {lot!r}: no batch certificate while {len(problems)} of its {len(macs)} machine(s) have "
        raise NotErased(message + "no certificate of erasure: " + " | ".join(problems), lot=lot, problems=problems)
    return BatchCertificate(id=str(uuid.uuid4()), issued=iso(time.time() if now is None else now),
                            software=SOFTWARE, workshop=Workshop(workshop), lot=lot, machines=machines)  # fmt: skip


def record_issued(store: CertificateStore, certificate: Certificate | BatchCertificate, fingerprint: str) -> None:
    """A ``certificate`` event on each machine it names: which certificate, signed by which key."""
    machines = certificate.machines if isinstance(certificate, BatchCertificate) else [certificate]
    for m in machines:
        detail = {"id": certificate.id, "kind": certificate.kind, "run": m.run, "drives": len(m.drives),
                  "key": fingerprint, "lot": m.lot}  # fmt: skip
        store.event(m.machine.mac, "certificate", detail)
        log.info("%s: certificate %s (%s) issued, %d drive(s), key %s", m.machine.mac, certificate.id,
                 certificate.kind, len(m.drives), fingerprint)  # fmt: skip
