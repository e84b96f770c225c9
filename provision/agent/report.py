"""What a write did: ``WriteReport`` (returned only when every chunk read back right) and ``Incident``; the
API's ``VerificationReport`` made from it (``verification``), the writer's figures for the run's events
(``writer_summary``) and how its chunks came, by HTTP or the multicast carousel (``transfer_report``); the log
lines of a plan's ``held`` version (delta re-imaging: ``held_note``, ``held_outcome``); a failure's facts for the
report (``error_facts``) and the imaged disk's path for the hook runner (``record_target``)."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provision.agent.ranges import Range, compact
from provision.errors import ProvisionError, RetryableError
from provision.wire.api import MAX_WIPE_RANGES, VerificationReport
from provision.wire.carousel import TransferReport
from provision.wire.delta import HeldVersion

log = logging.getLogger("provision.agent")
HELD_SLACK = 8  # chunks beyond the prediction that are no news (first-boot files, a grown root, logs)


@dataclass(frozen=True)
class Incident:
    """A failure the writer recovered from: a transient HTTP error retried, or a bad chunk fetched again."""

    kind: str  # "transient" (refused, reset, timeout, 5xx, truncated) or "corrupt" (undecodable, bad sha256)
    url: str
    detail: str
    attempt: int
    chunk: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "url": self.url, "detail": self.detail, "attempt": self.attempt,
                "chunk": self.chunk}  # fmt: skip

    def __str__(self) -> str:
        where = f"chunk {self.chunk} " if self.chunk is not None else ""
        return f"{self.kind} {where}attempt {self.attempt}: {self.detail} ({self.url})"


@dataclass(frozen=True)
class WriteReport:
    """One verified write of an image version onto a target.

    - ``fetched``: chunks written from fetched data; ``skipped``: chunks already right on the target (resume,
      or an older version of the image); ``downloads``: chunk bodies fetched (a chunk repeated in the image
      is fetched once); ``bytes_fetched``: compressed bytes received for them.
    - ``wipe_ranges``: the merged hole runs ``(offset, length)`` the wipe policy applied to.
    - ``verified``: data chunks whose bytes read back with the right sha256 after fsync; ``holes_verified``:
      holes that read back as zeros (wipe ``zero`` only).
    - ``failures``: recovered incidents (the first 100; ``failure_count`` counts all).
    """

    image: str
    digest: str
    target: str
    target_kind: str
    io_mode: str
    readback: str  # where the read-back came from: "O_DIRECT", "medium (cache dropped)" or "page cache"
    disk_size: int
    chunk_size: int
    chunks: int
    holes: int
    fetched: int
    skipped: int
    downloads: int
    bytes_fetched: int
    bytes_written: int
    wipe: str
    wipe_method: str
    wipe_ranges: tuple[Range, ...]
    wiped_bytes: int
    verified: int
    holes_verified: int
    failures: tuple[Incident, ...]
    failure_count: int
    seconds: float
    stage_seconds: tuple[tuple[str, float], ...]

    @property
    def ok(self) -> bool:
        data_ok = self.verified == self.chunks - self.holes
        return data_ok and (self.wipe != "zero" or self.holes_verified == self.holes)

    @property
    def mean_rate(self) -> float:
        """Disk bytes (holes included) per second of the whole run."""
        return self.disk_size / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "image": self.image,
            "digest": self.digest,
            "target": self.target,
            "target_kind": self.target_kind,
            "io_mode": self.io_mode,
            "readback": self.readback,
            "disk_size": self.disk_size,
            "chunk_size": self.chunk_size,
            "chunks": self.chunks,
            "holes": self.holes,
            "fetched": self.fetched,
            "skipped": self.skipped,
            "downloads": self.downloads,
            "bytes_fetched": self.bytes_fetched,
            "bytes_written": self.bytes_written,
            "wipe": {
                "policy": self.wipe,
                "method": self.wipe_method,
                "bytes": self.wiped_bytes,
                "ranges": [list(r) for r in self.wipe_ranges],
                "compact": compact(self.wipe_ranges),
            },
            "verified": self.verified,
            "holes_verified": self.holes_verified,
            "failures": [f.to_dict() for f in self.failures],
            "failure_count": self.failure_count,
            "seconds": round(self.seconds, 3),
            "stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds},
            "mean_rate": round(self.mean_rate),
        }


def verification(report: WriteReport) -> VerificationReport:
    """The API's verification from the writer's report (data chunks and holes counted apart)."""
    return VerificationReport(
        digest=report.digest,
        chunks=report.chunks - report.holes,
        verified=report.verified,
        read_back_ok=report.ok,
        bytes_written=report.bytes_written,
        seconds=round(report.seconds, 3),
        mean_rate=float(round(report.mean_rate)),
        holes=report.holes,
        holes_verified=report.holes_verified,
        wipe_method=report.wipe_method,
        wipe_ranges=[(o, n) for o, n in report.wipe_ranges[:MAX_WIPE_RANGES]],
    )


def writer_summary(report: WriteReport) -> dict[str, Any]:
    """The writer's figures for the run's events: what was fetched or already right, incidents, I/O."""
    full = report.to_dict()
    keep = ("target", "target_kind", "io_mode", "readback", "disk_size", "chunk_size", "fetched", "skipped",
            "downloads", "bytes_fetched", "failure_count", "stage_seconds")  # fmt: skip
    summary = {k: full[k] for k in keep}
    summary["failures"] = full["failures"][:20]
    return summary


class PassTally:
    """What one write pass fetched and wrote, counted as it goes (``write_image(tally=...)``): a pass that fails
    still counts what it received, so a run resumed by a later pass reports every byte it fetched."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.downloads = self.bytes = self.written = 0

    def add(self, downloads: int, received: int, written: int) -> None:
        with self._lock:
            self.downloads += downloads
            self.bytes += received
            self.written += written


def over_passes(report: WriteReport, tallies: Sequence[PassTally]) -> WriteReport:
    """The verified pass's report with ``downloads``, ``bytes_fetched`` and ``bytes_written`` summed over every
    pass of the run (``fetched`` and ``skipped`` stay the last pass's: the chunks it wrote and found right)."""
    if len(tallies) < 2:
        return report
    earlier = tallies[:-1]
    return dataclasses.replace(
        report, downloads=report.downloads + sum(t.downloads for t in earlier),
        bytes_fetched=report.bytes_fetched + sum(t.bytes for t in earlier),
        bytes_written=report.bytes_written + sum(t.written for t in earlier),
    )  # fmt: skip


def transfer_report(
    report: WriteReport, multicast: TransferReport | None, tallies: Sequence[PassTally] = ()
) -> TransferReport:
    """How the chunks of a run came: unicast (every pass by HTTP: ``report`` summed over them, ``over_passes``),
    or the multicast source's figures (the first pass) plus the HTTP of every later pass."""
    if multicast is None:
        return TransferReport("unicast", bytes_http=report.bytes_fetched, chunks_http=report.downloads)
    later = tallies[1:]
    if not later:
        return multicast
    return dataclasses.replace(multicast, bytes_http=multicast.bytes_http + sum(t.bytes for t in later),
                               chunks_http=multicast.chunks_http + sum(t.downloads for t in later))  # fmt: skip


def held_note(mac: str, run_id: str, held: HeldVersion, path: Path) -> None:
    """Log what the plan says the disk holds. The writer's check stage reads and hashes every chunk anyway, so a
    disk that changed since (or another disk) only costs more chunks fetched than predicted (docs/delta.md)."""
    log.info("%s: run %s: the server's record says the disk holds %s@%s (run %s): %d chunks, %d bytes to download "
             "predicted; every chunk is checked on the disk first", mac, run_id, held.image, held.version, held.run,
             held.chunks, held.download)  # fmt: skip
    if held.target is not None and held.target != str(path):
        log.warning("%s: run %s: %s@%s was written to %s, this run writes %s: the prediction may not hold", mac,
                    run_id, held.image, held.version, held.target, path)  # fmt: skip


def held_outcome(mac: str, run_id: str, held: HeldVersion, report: WriteReport) -> None:
    """Log the prediction against what the write found on the disk and fetched. A few chunks more than predicted
    is the rule (the first boot, growing the root and use change some); a warning only when more than a tenth
    of the image's data chunks (and over ``HELD_SLACK``) changed since the disk was verified."""
    extra = report.fetched - held.chunks
    many = extra > max(HELD_SLACK, report.chunks // 10)
    why = ""
    if extra > 0:
        why = (
            f": {extra} more than predicted, changed on the disk since it was verified"
            f"{' (much of the disk: was it used or written by another system?)' if many else ''}"
        )
    log.log(logging.WARNING if many else logging.INFO,
            "%s: run %s: held %s: predicted %d chunks (%d bytes to download), fetched %d (%d bytes), %d already "
            "right%s", mac, run_id, held.version, held.chunks, held.download, report.fetched, report.bytes_fetched,
            report.skipped, why)  # fmt: skip


def record_target(record: Path, disk: Path) -> None:
    """Write the verified disk's path to ``record`` (``TARGET_RECORD``) for the hook runner, atomically; a
    failure is logged, not fatal: the server can still name the disk in each hook job."""
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        temporary = record.with_name(f".{record.name}.{os.getpid()}")
        temporary.write_text(f"{disk.absolute()}\n", encoding="utf-8")
        temporary.replace(record)
    except OSError as exc:
        log.warning("cannot record the imaged disk %s in %s: %s", disk, record, exc)


def error_facts(exc: BaseException) -> dict[str, Any]:
    """An error's type and facts as JSON-safe values (long values cut)."""
    facts = exc.facts if isinstance(exc, ProvisionError) else {}
    safe: dict[str, Any] = {}
    for key, value in list(facts.items())[:20]:
        safe[key] = value if isinstance(value, int | float | bool | None) else str(value)[:500]
    return {"type": type(exc).__name__, "retryable": isinstance(exc, RetryableError), "facts": safe}
