"""``build_image``: a definition -> a root tree -> a raw disk with both boot chains -> a version in the store.

Steps (each reported to the progress callback and in the build log):

    resolve                      package versions asked of apt / the package cache; the inputs digest
    rootfs | bootstrap,customize,finish-tree   the root tree (tiny: from the cache; debian: mmdebstrap)
    partition                    sparse raw file + sfdisk (GPT: BIOS boot, ESP, root)
    filesystems                  mkfs.fat --offset (ESP), mke2fs -E offset -d (root, filled from the tree)
    bootloader-bios              grub-mkimage core.img; core.img + boot.img written into the raw disk
    bootloader-uefi              shim + signed GRUB + prefix grub.cfg onto the ESP (mtools)
    finish                       e2fsck -f -n
    import                       chunks into the store; published (``current`` moves) only now

In place or fresh (``mode.decide``, said in the build log and the result): an in-place rebuild adds the step

    previous                     the current version's disk exported (sparse) and checked (e2fsck -f -n)

and its ``filesystems`` step updates that root file system to the new tree (``inplace``: mount through a
loop device, rsync, unmount, freed blocks punched out) instead of ``mke2fs -d``; everything outside the root
file system is written as a fresh build writes it. A fresh build's disk steps work on byte ranges of the raw
file: no loop device, no mount (see ``disk``). Nothing is
published unless every step succeeded; whatever a failed bootstrap left mounted below the build folder
is unmounted, and the folder removed, in ``finally`` blocks (an injected failure included:
``Runner(fail_at=STEP)``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from provision.bootfiles import DebCache
from provision.builder import debian, disk, diskbuild
from provision.builder.bootloader import (
    BootEntry,
    kernel_args,
    stage_bios_modules,
    write_grub_cfg,
)
from provision.builder.definition import DebianDefinition, LoadedDefinition, TinyDefinition, load_definition
from provision.builder.errors import ImageBuildError, StepFailed, ToolMissing
from provision.builder.inputs import BUILDER_VERSION, Inputs, resolve_inputs
from provision.builder.mode import Decision, layout_record
from provision.builder.overlay import apply_overlays
from provision.builder.progress import (
    DEBIAN_STEPS,
    TINY_STEPS,
    BuildResult,
    ChunkStats,
    ProgressCallback,
    StepTracker,
    chunk_stats,
    known_chunks,
)
from provision.builder.runner import TOOL_PACKAGES, BuildLog, Runner
from provision.builder.tiny import StagedRoot, stage_tiny
from provision.errors import ProvisionError
from provision.images.store import ImageStore
from provision.workdirs import private_dir

log = logging.getLogger(__name__)

DEFAULT_WORKDIR = Path("/var/tmp/provision-build")  # nosec B108  # noqa: S108 - private_dir(): 0700, ours, no symlink
DEFAULT_LOG_DIR = Path("/var/log/provision/image-builds")
DISK_TOOLS = ("sfdisk", "mkfs.fat", "mke2fs", "e2fsck", "mmd", "mcopy", "grub-mkimage")
DEBIAN_TOOLS = ("mmdebstrap", "chroot", "systemctl", "dpkg-query")


@contextlib.contextmanager
def build_lock(workdir: Path, name: str) -> Iterator[None]:
    """One build of an image at a time on this machine (a nightly run and a manual one do not clash)."""
    private_dir(workdir)
    with (workdir / f"{name}.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ImageBuildError(f"image {name} is being built by another process", image=name, step="lock") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def preflight(runner: Runner, debian_build: bool) -> None:
    """Refuse early (before a long bootstrap) when a tool is missing, or root for mmdebstrap."""
    if type(runner) is not Runner:
        return  # a recording runner runs nothing
    if debian_build and os.geteuid() != 0:
        raise ImageBuildError(
            f"image {runner.image}: building a Debian image needs root (mmdebstrap, chroot)",
            image=runner.image,
            step="preflight",
        )
    for tool in (*DISK_TOOLS, *(DEBIAN_TOOLS if debian_build else ())):
        if shutil.which(tool) is None:
            raise ToolMissing(tool, TOOL_PACKAGES.get(tool, tool), image=runner.image, step="preflight")


def _stage(
    runner: Runner, tracker: StepTracker, inputs: Inputs, work: Path, ids: disk.DiskLayout
) -> tuple[StagedRoot, dict[str, str]]:
    """The root tree and the installed package versions."""
    spec = inputs.definition.spec
    tree = work / "root"
    if isinstance(spec, TinyDefinition):
        tracker.step("rootfs")
        assert inputs.tiny is not None
        staged = stage_tiny(spec, inputs.tiny, tree, label=inputs.label)
        apply_overlays(inputs.definition.overlay_dirs(), tree)
        return staged, dict(inputs.packages)
    assert isinstance(spec, DebianDefinition)
    tracker.step("bootstrap")
    epoch = inputs.boot.epoch()  # SOURCE_DATE_EPOCH of the bootstrap and its settings (reproducible images)
    debian.bootstrap(runner, spec, inputs.suite, list(inputs.archive), tree, on_stage=tracker.message, epoch=epoch)
    tracker.step("customize")
    debian.configure(runner, spec, tree, ids, epoch)
    apply_overlays(inputs.definition.overlay_dirs(), tree)
    tracker.step("finish-tree")
    return debian.finalize(runner, spec, tree, inputs.label)


def _stage_boot(staged: StagedRoot, inputs: Inputs, ids: disk.DiskLayout) -> None:
    """``/boot/grub/grub.cfg`` and GRUB's i386-pc modules into the root tree (before it is measured)."""
    spec = inputs.definition.spec
    entry = BootEntry(
        # not the label: it changes with every rebuild, and the file holding it costs a 4 MiB chunk of each
        # in-place rebuild (issue 17); /etc/provision/image.json names the version
        title=spec.boot.title or spec.name,
        kernel=staged.kernel,
        initrd=staged.initrd,
        cmdline=kernel_args(spec.boot.cmdline, spec.boot.serial),
        timeout=spec.boot.timeout,
        serial=spec.boot.serial,
    )
    write_grub_cfg(staged.tree, entry, ids)
    stage_bios_modules(staged.tree, inputs.boot)


def _disk_layout(inputs: Inputs, content: int) -> disk.DiskLayout:
    spec = inputs.definition.spec
    size = spec.disk.size
    if size == 0:
        size = disk.auto_size(content, spec.disk.free_space, spec.disk.esp_size)
    size = -(-size // disk.MiB) * disk.MiB
    layout = disk.DiskLayout(spec.name, size, spec.disk.esp_size)
    try:
        layout.check()
    except ValueError as exc:
        raise ImageBuildError(f"image {spec.name}: {exc}", image=spec.name, step="partition") from None
    return layout


def build_image(
    definition: Path | LoadedDefinition,
    store: ImageStore,
    *,
    cache: DebCache | None = None,
    inputs: Inputs | None = None,
    workdir: Path = DEFAULT_WORKDIR,
    log_dir: Path = DEFAULT_LOG_DIR,
    progress: ProgressCallback | None = None,
    runner: Runner | None = None,
    publish: bool = True,
    keep_workdir: bool = False,
    fresh: bool = False,
) -> BuildResult:
    """Build the image of ``definition`` and import it into ``store`` (published unless ``publish=False``).

    ``inputs`` may come from ``resolve_inputs`` (the nightly rebuild resolves first, to skip unchanged
    images). ``fresh`` lays the disk out anew even when the current version's disk could be updated in
    place (``mode.decide``). Raises ConfigError for a bad definition, ImageBuildError (PackageNotFound, StepFailed,
    ToolMissing ...) when the build fails; ``current`` is then untouched.
    """
    loaded = definition if isinstance(definition, LoadedDefinition) else load_definition(definition)
    spec = loaded.spec
    runner = runner or Runner()
    started = time.monotonic()
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    build_log = BuildLog(log_dir / f"{spec.name}-{stamp}.log")
    runner.bind(spec.name, build_log)
    steps = TINY_STEPS if isinstance(spec, TinyDefinition) else DEBIAN_STEPS
    tracker = StepTracker(spec.name, steps, progress, build_log, runner.step)
    build_log.write(f"build of image {spec.name} from {loaded.path} (sha256 {loaded.sha256})")
    try:
        with build_lock(workdir, spec.name):
            preflight(runner, isinstance(spec, DebianDefinition))
            work = Path(tempfile.mkdtemp(prefix=f"{spec.name}-", dir=workdir))
            try:
                return _build(loaded, store, cache, inputs, runner, tracker, work, publish, build_log, started, fresh)
            finally:
                left = disk.unmount_below(runner, work)
                if left:
                    build_log.write(f"unmounted what the build left mounted: {' '.join(left)}")
                if not keep_workdir:
                    shutil.rmtree(work, ignore_errors=True)
    except ProvisionError as exc:
        build_log.write(f"FAILED at step {tracker.current or '-'}: {exc}")
        log.error("image %s: build failed at step %s (log %s)", spec.name, tracker.current, build_log.path)
        raise
    except BaseException as exc:
        build_log.write(f"FAILED at step {tracker.current or '-'}: {type(exc).__name__}: {exc}")
        raise
    finally:
        build_log.close()


def _build(
    loaded: LoadedDefinition,
    store: ImageStore,
    cache: DebCache | None,
    inputs: Inputs | None,
    runner: Runner,
    tracker: StepTracker,
    work: Path,
    publish: bool,
    build_log: BuildLog,
    started: float,
    fresh: bool = False,
) -> BuildResult:
    spec = loaded.spec
    tracker.step("resolve")
    if inputs is None:
        inputs = resolve_inputs(loaded, cache or DebCache())
    build_log.write(f"inputs {inputs.digest}: {len(inputs.packages)} packages, boot {inputs.boot.versions()}")
    ids = disk.DiskLayout(spec.name, 0, 0)  # identifiers only: they do not depend on the size
    staged, installed = _stage(runner, tracker, inputs, work, ids)
    _stage_boot(staged, inputs, ids)
    content = disk.tree_bytes(staged.tree)
    planned = _disk_layout(inputs, content)
    raw = work / "disk.raw"
    previous = store.current(spec.name)
    decision, layout = diskbuild.choose_mode(store, previous, inputs, planned, content, runner, tracker, raw, fresh)
    build_log.write(f"mode {decision.reason}")  # "mode in place: ..." or "mode fresh: ..."
    log.info("image %s: %s", spec.name, decision.reason)
    in_place: dict[str, object] = {}
    if decision.mode == "in_place":
        try:
            in_place = diskbuild.update_disk(runner, tracker, raw, layout, staged, inputs)
        except StepFailed as exc:  # the nightly job must not fail the same way every night: lay it out anew
            said = str(exc).strip().splitlines()[0].rstrip(":")  # the command and the log; its output is logged
            decision = Decision("fresh", f"fresh: the in-place update failed ({said})", decision.rebuilt_from, 0,
                                planned.size)  # fmt: skip
            build_log.write(f"mode {decision.reason}")
            log.warning("image %s: %s", spec.name, decision.reason)
            raw.unlink(missing_ok=True)
            layout = planned
    if decision.mode == "fresh":
        diskbuild.make_disk(runner, tracker, raw, layout, staged, inputs)
    tracker.step("import")
    before = known_chunks(store)
    provenance = {
        "builder": "provision image builder",
        "builder_version": inputs.summary()["builder_version"],
        "definition": {"file": loaded.path.name, "sha256": loaded.sha256, "builder": spec.builder},
        "inputs": inputs.digest,
        "inputs_summary": {k: v for k, v in inputs.summary().items() if k != "packages"},
        "label": inputs.label,
        "resolved": inputs.packages,
        "packages": installed,
        "built": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "build_seconds": round(time.monotonic() - started, 1),
        "log": str(build_log.path or ""),
        "build": decision.to_dict(),
        "layout": layout_record(layout, spec.disk.chunk_size, BUILDER_VERSION).to_dict(),
    }
    version = store.import_raw(
        raw,
        spec.name,
        chunk_size=spec.disk.chunk_size,
        provenance=provenance,
        progress=tracker.bytes_progress,
        publish=False,
    )
    stats: ChunkStats = chunk_stats(version, before)
    if publish:
        store.publish(version)
    tracker.done()
    result = BuildResult(
        name=spec.name,
        version=version,
        published=publish,
        label=inputs.label,
        inputs_digest=inputs.digest,
        packages=installed,
        previous=previous,
        disk_size=layout.size,
        chunks=stats,
        seconds=time.monotonic() - started,
        step_seconds=dict(tracker.seconds),
        log=build_log.path,
        mode=decision.mode,
        mode_reason=decision.reason,
        rebuilt_from=decision.rebuilt_from,
        in_place=in_place,
    )
    build_log.write(f"done: {version.ref}, {stats.new} new chunks of {stats.stored} stored ({stats.total} in all)")
    log.info(
        "image %s: built %s in %.0f s: %d new chunks of %d",
        spec.name,
        version.ref,
        result.seconds,
        stats.new,
        stats.total,
    )
    return result
