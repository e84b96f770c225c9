"""What a write did: ``WriteReport`` (returned only when every chunk read back right) and ``Incident``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from provision.agent.ranges import Range, compact


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
