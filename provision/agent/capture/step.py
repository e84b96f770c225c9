"""The agent's capture step (issue 17; the protocol is provision.wire.capture's docstring): the hello answered
``capture``, the disk the plan's ``target_disk`` names is read whole and sent, and the server publishes it as a
new version of the image.

``capture_disk``: the disk chosen like an image run's target (``disks.choose_target``: never the live medium, a
removable or USB disk, or one holding a mounted file system), opened read-only; its partitions and their free
space read (``reader.read_layout``); every chunk offered and the missing ones uploaded (``send.send_disk``),
progress posted (stage ``capturing``: bytes gone through of the disk's size) and drawn on the PC's screen; then
``CaptureDone`` with the figures, the file systems found and the disk as lsblk names it. The server's answer (the
run ``done`` with the new version, or ``failed`` with the reason) is returned; ``capture_outcome`` says what it
means for the PC. Any failure raises: the caller reports the run failed (``Report(ok=False)``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from provision.agent.capture.reader import ChunkReader, DiskReader, Layout, read_layout
from provision.agent.capture.send import Figures, send_disk
from provision.agent.client import ProgressPoster, ServerApi
from provision.agent.disks import Disk, choose_target
from provision.agent.outcome import EXIT_DONE, EXIT_FAILED, Outcome
from provision.agent.screen import Console
from provision.wire.api import RunAnswer, Stage
from provision.wire.capture import CaptureDone, CapturePlan

log = logging.getLogger(__name__)

CAPTURING: Stage = "capturing"
DRAW_EVERY = 1.0  # seconds between drawings of the PC's screen (and progress posts) while the percent stays


class Meter:
    """The capture's progress for the server (``ProgressPoster``) and the PC's screen, at most once a second
    unless the percent changed."""

    def __init__(self, poster: ProgressPoster, console: Console, clock: Callable[[], float]) -> None:
        self.poster, self.console, self.clock = poster, console, clock
        self.started = clock()
        self.shown: tuple[int, float] = (-1, 0.0)

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        percent = done * 100 // max(total, 1)
        if percent == self.shown[0] and now - self.shown[1] < DRAW_EVERY and done < total:
            return
        self.shown = (percent, now)
        self.console.progress(CAPTURING, done, total)
        self.poster.submit(CAPTURING, done, total, done / max(now - self.started, 1e-6))


def capture_disk(
    run_id: str,
    plan: CapturePlan,
    disks: Sequence[tuple[Disk, Path]],
    live: set[str],
    *,
    api: ServerApi,
    console: Console,
    workers: int,
    clock: Callable[[], float] = time.monotonic,
    layout_of: Callable[[DiskReader, str], Layout] | None = None,
) -> RunAnswer:
    """Capture the plan's disk; the server's answer to ``CaptureDone``. Raises on any failure."""
    disk = choose_target([d for d, _ in disks], plan.target_disk, 0, live)
    path = dict((d.name, p) for d, p in disks)[disk.name]
    started = clock()
    current = f" (now {plan.current})" if plan.current else ""
    log.info("%s: run %s: capturing %s (%s, serial %s) as %s%s", api.mac, run_id, path, disk.model or "?",
             disk.serial or "?", plan.image, current)  # fmt: skip
    console.progress(CAPTURING, 0, 1)
    with DiskReader(path) as reader:
        if layout_of is None:
            layout = read_layout(reader.read, reader.size, reader.sector_size, log_id=run_id)
        else:
            layout = layout_of(reader, run_id)
        chunks = ChunkReader(reader, layout.free, plan.chunk_size)
        poster = ProgressPoster(api, run_id, console.number)
        try:
            figures = send_disk(api, run_id, plan, chunks, workers=workers, progressed=Meter(poster, console, clock))
        finally:
            poster.close()
        done = CaptureDone(
            api.token, reader.size, reader.sector_size, figures.sha256, figures.chunks, figures.holes,
            figures.read_bytes, figures.uploaded_chunks, figures.uploaded_bytes, round(clock() - started, 3),
            layout.captured(), str(path), disk.model, disk.serial,
        )  # fmt: skip
    log.info("%s: run %s: %s", api.mac, run_id, summary(figures, layout, reader.size))
    answer = api.done(run_id, done)
    console.server(answer.screen)
    return answer


def summary(figures: Figures, layout: Layout, size: int) -> str:
    """One line of a capture's figures, for the log."""
    mib = 1 << 20
    return (
        f"{figures.chunks} chunks ({figures.holes} holes) in {figures.offers} offers, {figures.read_bytes / mib:.1f} "
        f"of {size / mib:.1f} MiB read ({layout.free_bytes / mib:.1f} MiB free in {len(layout.filesystems)} "
        f"partitions), {figures.uploaded_chunks} chunks uploaded ({figures.new_chunks} new to the store, "
        f"{figures.uploaded_bytes / mib:.1f} MiB compressed), disk sha256 {figures.sha256}"
    )


def capture_outcome(run_id: str, answer: RunAnswer, console: Console) -> Outcome:
    """The PC's outcome for the server's answer to the capture's end: ``done`` reboots (the server makes it boot
    its local disk), anything else is a failure with the server's reason."""
    if answer.state == "done":
        console.show(stage="done", word=None, percent=100, reason=answer.reason, action=None)
        return Outcome(EXIT_DONE, "done", answer.reason, run_id)
    reason = answer.reason or f"server says {answer.state} after the capture"
    console.failed(reason, answer.screen)
    return Outcome(EXIT_FAILED, answer.state, reason, run_id)
