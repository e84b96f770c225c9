"""The disk steps of a build: a fresh layout (``make_disk``), the current version's disk updated in place
(``update_disk``), and the choice between them (``choose_mode``: ``mode.decide`` asked from the records, then
with the figures of the exported disk). ``build.py`` runs them between staging the tree and the import."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from provision.builder import disk, inplace, reproducible
from provision.builder.bootloader import install_bios, install_uefi
from provision.builder.inputs import BUILDER_VERSION, Inputs
from provision.builder.mode import Decision, Previous, Request, decide, layout_record
from provision.builder.progress import PREVIOUS_STEP, StepTracker, with_previous
from provision.builder.runner import Runner
from provision.builder.tiny import StagedRoot
from provision.images.errors import ImageError
from provision.images.index import ImageVersion
from provision.images.store import ImageStore


def make_disk(
    runner: Runner, tracker: StepTracker, raw: Path, layout: disk.DiskLayout, staged: StagedRoot, inputs: Inputs
) -> None:
    work = raw.parent
    tracker.step("partition")
    disk.create_raw(raw, layout.size)
    disk.partition(runner, raw, layout)
    tracker.step("filesystems")
    disk.make_esp(runner, raw, layout)
    disk.make_root(runner, raw, layout, staged.tree, staged.epoch())
    tracker.step("bootloader-bios")
    install_bios(runner, raw, layout, inputs.boot, work)
    tracker.step("bootloader-uefi")
    install_uefi(runner, raw, layout, inputs.boot, work)
    tracker.step("finish")
    disk.check_root(runner, raw, layout)


def update_disk(
    runner: Runner, tracker: StepTracker, raw: Path, layout: disk.DiskLayout, staged: StagedRoot, inputs: Inputs
) -> dict[str, object]:
    """The in-place counterpart of ``make_disk``: the exported disk's root file system updated to the tree,
    everything else written anew as a fresh build writes it. Returns the update's figures."""
    work = raw.parent
    tracker.step("partition")
    inplace.clear_outside_root(raw, layout)
    disk.partition(runner, raw, layout)
    tracker.step("filesystems")
    disk.make_esp(runner, raw, layout)
    clamped = reproducible.clamp_tree(staged.tree, staged.epoch())  # as make_root does before mke2fs -d
    runner.log.write(f"  {clamped} modification times of the tree clamped to {staged.epoch()}")
    figures = inplace.update_root(runner, raw, layout, staged.tree, work)
    tracker.message(
        f"root updated in place: {figures.rsync_stats.get('Number of regular files transferred', '?')} files "
        f"written, {figures.scrub.stale_bytes} bytes of freed blocks punched out"
    )
    tracker.step("bootloader-bios")
    install_bios(runner, raw, layout, inputs.boot, work)
    tracker.step("bootloader-uefi")
    install_uefi(runner, raw, layout, inputs.boot, work)
    tracker.step("finish")
    disk.check_root(runner, raw, layout)
    return figures.to_dict()


def choose_mode(
    store: ImageStore,
    previous: ImageVersion | None,
    inputs: Inputs,
    planned: disk.DiskLayout,
    content: int,
    runner: Runner,
    tracker: StepTracker,
    raw: Path,
    fresh: bool,
) -> tuple[Decision, disk.DiskLayout]:
    """In place or fresh (``mode.decide``): asked once from the records, then, when it says in place, again
    with the figures of the current version's disk, exported into ``raw`` (left there for the update)."""
    spec = inputs.definition.spec
    request = Request(
        planned=layout_record(planned, spec.disk.chunk_size, BUILDER_VERSION),
        auto_free_space=spec.disk.free_space if spec.disk.size == 0 else None,
        content_bytes=content,
        previous=None if previous is None else Previous.of(previous.ref, previous.index.provenance),
        fresh_requested=fresh,
        unable=inplace.unable(runner),
    )
    decision = decide(request)
    if decision.mode == "fresh" or previous is None:
        return decision, planned
    layout = disk.DiskLayout(spec.name, decision.disk_size, spec.disk.esp_size)
    tracker.steps = with_previous(tracker.steps)
    tracker.step(PREVIOUS_STEP)
    try:
        written = inplace.export_previous(store, previous, raw)
    except (ImageError, OSError) as exc:
        raw.unlink(missing_ok=True)
        reason = f"fresh: the disk of {previous.ref} could not be read from the store ({exc})"
        return Decision("fresh", reason, previous.ref, 0, planned.size), planned
    tracker.message(f"{previous.ref}: {written >> 20} MiB of data exported")
    figures = inplace.check_previous(runner, raw, layout)
    if figures is None:
        raw.unlink(missing_ok=True)
        return Decision(
            "fresh", f"fresh: e2fsck gave no figures for {previous.ref}'s root", previous.ref, 0, planned.size
        ), planned
    decision = decide(dataclasses.replace(request, fs=figures))
    if decision.mode == "fresh":
        raw.unlink(missing_ok=True)
        return decision, planned
    return decision, layout
