"""What a build reports: progress events while it runs, a ``BuildResult`` when it is done."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provision.builder.runner import BuildLog
from provision.images.index import ImageVersion
from provision.images.store import ImageStore

log = logging.getLogger(__name__)

DISK_STEPS = ("partition", "filesystems", "bootloader-bios", "bootloader-uefi", "finish", "import")
TINY_STEPS = ("resolve", "rootfs", *DISK_STEPS)
DEBIAN_STEPS = ("resolve", "bootstrap", "customize", "finish-tree", *DISK_STEPS)
PREVIOUS_STEP = "previous"  # an in-place rebuild: the current version's disk exported and checked


def with_previous(steps: tuple[str, ...]) -> tuple[str, ...]:
    """The steps of an in-place rebuild: ``previous`` before the disk steps."""
    if PREVIOUS_STEP in steps:
        return steps
    at = steps.index(DISK_STEPS[0])
    return (*steps[:at], PREVIOUS_STEP, *steps[at:])


@dataclass(frozen=True)
class BuildProgress:
    """One progress event: a step started (``fraction`` None) or moved on (0..1 within the step)."""

    image: str
    step: str
    index: int  # 1-based number of the step
    total: int  # steps of this build
    message: str = ""
    fraction: float | None = None


ProgressCallback = Callable[[BuildProgress], None]


class StepTracker:
    """Turns step changes into progress events, log lines and per-step durations."""

    def __init__(
        self,
        image: str,
        steps: tuple[str, ...],
        callback: ProgressCallback | None,
        build_log: BuildLog,
        on_step: Callable[[str], None] | None = None,
    ) -> None:
        self.image = image
        self.on_step = on_step  # the runner's step(): where an injected failure fires
        self.steps = steps
        self.callback = callback
        self.build_log = build_log
        self.current = ""
        self.seconds: dict[str, float] = {}
        self._since = time.monotonic()
        self._last_fraction = -1.0

    def _emit(self, message: str = "", fraction: float | None = None) -> None:
        if self.callback is None or not self.current:
            return
        index = self.steps.index(self.current) + 1 if self.current in self.steps else 0
        try:
            self.callback(BuildProgress(self.image, self.current, index, len(self.steps), message, fraction))
        except Exception:  # a broken progress display must not break the build
            log.exception("progress callback failed")

    def _close_step(self) -> None:
        if self.current:
            self.seconds[self.current] = round(self.seconds.get(self.current, 0.0) + time.monotonic() - self._since, 2)

    def step(self, name: str) -> None:
        self._close_step()
        self.current = name
        self._since = time.monotonic()
        self._last_fraction = -1.0
        self.build_log.write(f"== step {name}")
        log.info("image %s: %s", self.image, name)
        self._emit()
        if self.on_step is not None:
            self.on_step(name)

    def message(self, text: str) -> None:
        self.build_log.write(f"   {text}")
        self._emit(text)

    def bytes_progress(self, done: int, total: int) -> None:
        """The store's import progress (bytes); reported every 5 %."""
        fraction = done / total if total else 1.0
        if fraction - self._last_fraction >= 0.05 or fraction >= 1.0:
            self._last_fraction = fraction
            self._emit(f"{done >> 20} of {total >> 20} MiB", fraction)

    def done(self) -> None:
        self._close_step()
        self.current = ""


@dataclass(frozen=True)
class ChunkStats:
    """Chunks of a new version: all of them, the distinct stored ones, and those new to the store."""

    total: int  # chunks of the disk, holes included
    holes: int
    stored: int  # distinct non-hole chunks
    new: int  # distinct chunks no version in the store held before this import

    def to_dict(self) -> dict[str, int]:
        return {"total": self.total, "holes": self.holes, "stored": self.stored, "new": self.new}


def known_chunks(store: ImageStore) -> set[str]:
    """Every chunk referenced by a stored version of any image (before an import)."""
    known: set[str] = set()
    for name in store.names():
        for version in store.versions(name):
            known.update(version.index.unique_chunks())
    return known


def chunk_stats(version: ImageVersion, before: set[str]) -> ChunkStats:
    unique = version.index.unique_chunks()
    return ChunkStats(
        total=len(version.index.chunks),
        holes=version.index.holes,
        stored=len(unique),
        new=sum(1 for sha in unique if sha not in before),
    )


@dataclass(frozen=True)
class BuildResult:
    """A finished build: the stored version and what it took."""

    name: str
    version: ImageVersion
    published: bool
    label: str  # name-<inputs digest prefix>, what the image calls itself
    inputs_digest: str
    packages: dict[str, str]  # installed name -> version
    previous: ImageVersion | None  # current before this build
    disk_size: int
    chunks: ChunkStats
    seconds: float
    step_seconds: dict[str, float] = field(default_factory=dict)
    log: Path | None = None
    mode: str = "fresh"  # "in_place": the current version's disk updated; "fresh": laid out anew
    mode_reason: str = ""  # one sentence: why this mode
    rebuilt_from: str | None = None  # ref of the version an in-place rebuild started from
    in_place: dict[str, Any] = field(default_factory=dict)  # rsync and free-block figures

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mode": self.mode,
            "mode_reason": self.mode_reason,
            "rebuilt_from": self.rebuilt_from,
            "in_place": self.in_place,
            "ref": self.version.ref,
            "digest": self.version.digest,
            "published": self.published,
            "label": self.label,
            "inputs": self.inputs_digest,
            "packages": len(self.packages),
            "previous": None if self.previous is None else self.previous.ref,
            "disk_size": self.disk_size,
            "chunks": self.chunks.to_dict(),
            "seconds": round(self.seconds, 1),
            "step_seconds": self.step_seconds,
            "log": None if self.log is None else str(self.log),
        }
