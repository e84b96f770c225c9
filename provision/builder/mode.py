"""In place or fresh: how a build lays out its disk, decided by one pure function (``decide``).

An in-place rebuild starts from the current version's disk and applies the new root tree to it
(``provision.builder.inplace``): unchanged files keep their blocks, so fixed 4 MiB chunks stay the same. A
fresh build lays everything out anew (``mke2fs -d``). Fresh is chosen, in this order, when:

- it is requested (``provision image build --fresh``, ``rebuild --all --fresh``, ``fresh=True``);
- there is no current version, or it carries no layout record (imported, or built before in-place rebuilds);
- in-place rebuilds cannot run here (they need root, loop devices and rsync, mount, unshare, dumpe2fs);
- the layout changed: disk size (with ``size: auto``, the current size is kept while the new tree leaves
  at least half of the definition's ``free_space`` on it and needs at least half of it), ESP size, chunk
  size, the root file system's ``mke2fs`` options, the image's identifiers, or ``BUILDER_VERSION``;
- ``MAX_GENERATIONS`` in-place rebuilds followed each other since the last fresh layout;
- the current disk's root file system fails ``e2fsck -f -n``, has more than ``FRAGMENTED_PERCENT`` % of
  non-contiguous files, or the new tree would fill more than ``FULL_PERCENT`` % of it.

The last three need the current disk's figures (``FsFigures``, from ``e2fsck``): the build asks once
without them, exports the current disk only when the answer is still "in place", and asks again with them.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from dataclasses import dataclass
from typing import Any, Literal

from provision.builder import disk

Mode = Literal["in_place", "fresh"]

MAX_GENERATIONS = 90  # about three months of nightly rebuilds that changed something
FRAGMENTED_PERCENT = 10.0  # e2fsck's "% non-contiguous" files; a fresh mke2fs -d layout has ~0-1 %
FULL_PERCENT = 90.0  # the new tree's estimated blocks over the root file system's


@dataclass(frozen=True)
class LayoutRecord:
    """What two builds must share for one to be the other updated in place (provenance ``layout``)."""

    disk_size: int
    esp_size: int
    chunk_size: int
    root_fs: str  # how the root file system is made (``root_fs_options``)
    identifiers: str  # disk GUID and root file system UUID
    builder_version: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "disk_size": self.disk_size,
            "esp_size": self.esp_size,
            "chunk_size": self.chunk_size,
            "root_fs": self.root_fs,
            "identifiers": self.identifiers,
            "builder_version": self.builder_version,
        }

    @classmethod
    def from_dict(cls, data: object) -> LayoutRecord | None:
        """The record of a provenance, or None when it is missing or not one."""
        if not isinstance(data, dict):
            return None
        try:
            ints = {k: data[k] for k in ("disk_size", "esp_size", "chunk_size", "builder_version")}
            texts = {k: data[k] for k in ("root_fs", "identifiers")}
        except KeyError:
            return None
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints.values()):
            return None
        if not all(isinstance(v, str) for v in texts.values()):
            return None
        return cls(**ints, **texts)


def root_fs_options() -> str:
    """A digest of how ``disk.make_root`` makes the root file system (its source: the ``mke2fs`` options and
    what is done around it), so a change of file system options makes the next build fresh."""
    try:
        source = inspect.getsource(disk.make_root)
    except (OSError, TypeError):  # no source shipped: no change can be seen
        return "make_root source unavailable"
    return "make_root sha256 " + hashlib.sha256(source.encode()).hexdigest()[:16]


def layout_record(layout: disk.DiskLayout, chunk_size: int, builder_version: int) -> LayoutRecord:
    return LayoutRecord(
        disk_size=layout.size,
        esp_size=layout.esp_size,
        chunk_size=chunk_size,
        root_fs=root_fs_options(),
        identifiers=f"disk {layout.disk_guid} root {layout.root_uuid}",
        builder_version=builder_version,
    )


@dataclass(frozen=True)
class Previous:
    """The current version a rebuild could start from."""

    ref: str
    layout: LayoutRecord | None
    generation: int  # in-place rebuilds since its last fresh layout (0: it is fresh)

    @classmethod
    def of(cls, ref: str, provenance: dict[str, Any]) -> Previous:
        build = provenance.get("build")
        generation = build.get("generation") if isinstance(build, dict) else 0
        generation = generation if isinstance(generation, int) and not isinstance(generation, bool) else 0
        return cls(ref, LayoutRecord.from_dict(provenance.get("layout")), generation)


@dataclass(frozen=True)
class FsFigures:
    """The current disk's root file system, as ``e2fsck -f -n`` saw it."""

    clean: bool
    files: int
    noncontiguous_percent: float
    blocks_used: int
    blocks_total: int
    block_size: int = 4096


_SUMMARY = re.compile(r"(\d+)/(\d+) files \(([\d.]+)% non-contiguous\), (\d+)/(\d+) blocks")


def parse_e2fsck_summary(text: str, *, clean: bool, block_size: int = 4096) -> FsFigures | None:
    """The figures of e2fsck's last line (``root: 11/16384 files (0.0% non-contiguous), 5764/65536 blocks``)."""
    found = _SUMMARY.findall(text)
    if not found:
        return None
    files, _inodes, percent, used, total = found[-1]
    return FsFigures(clean, int(files), float(percent), int(used), int(total), block_size)


@dataclass(frozen=True)
class Decision:
    """How the disk is laid out, why (one sentence), from which version and the in-place generation."""

    mode: Mode
    reason: str
    rebuilt_from: str | None = None
    generation: int = 0
    disk_size: int = 0  # the disk size to build (an in-place rebuild keeps the current one)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "reason": self.reason,
            "rebuilt_from": self.rebuilt_from,
            "generation": self.generation,
        }


@dataclass(frozen=True)
class Request:
    """Everything ``decide`` weighs."""

    planned: LayoutRecord  # the layout the definition asks for now (with size auto: the size it needs)
    auto_free_space: int | None  # size auto: the definition's free_space; None: a fixed size
    content_bytes: int  # the new tree's estimated bytes in ext4 (``disk.tree_bytes``)
    previous: Previous | None
    fresh_requested: bool = False
    unable: str | None = None  # why in-place rebuilds cannot run here (None: they can)
    fs: FsFigures | None = None  # the current disk's figures, once exported and checked


def _fresh(request: Request, reason: str) -> Decision:
    previous = request.previous.ref if request.previous is not None else None
    return Decision("fresh", f"fresh: {reason}", previous, 0, request.planned.disk_size)


def _layout_change(request: Request, old: LayoutRecord) -> tuple[str | None, int]:
    """What changed in the layout (None: nothing) and the disk size an in-place rebuild keeps."""
    new = request.planned
    size = old.disk_size
    mib = disk.MiB
    if request.auto_free_space is not None:
        if new.disk_size - request.auto_free_space // 2 > old.disk_size:
            return (
                f"the tree needs a {new.disk_size // mib} MiB disk with its free space: the current "
                f"{size // mib} MiB would leave it less than half of {request.auto_free_space // mib} MiB",
                0,
            )
        if new.disk_size * 2 < old.disk_size:
            return f"the tree needs a {new.disk_size // mib} MiB disk, under half the current {size // mib} MiB", 0
    elif new.disk_size != old.disk_size:
        return f"the disk size changed from {old.disk_size // mib} to {new.disk_size // mib} MiB", 0
    changes = [
        ("the ESP size", old.esp_size != new.esp_size),
        ("the chunk size", old.chunk_size != new.chunk_size),
        ("the root file system's options", old.root_fs != new.root_fs),
        ("the image's identifiers", old.identifiers != new.identifiers),
        (
            f"the builder version ({old.builder_version} -> {new.builder_version})",
            old.builder_version != new.builder_version,
        ),
    ]
    changed = [what for what, differs in changes if differs]
    if changed:
        return " and ".join(changed) + " changed", 0
    return None, size


def decide(request: Request) -> Decision:
    """In place or fresh, and the one-sentence reason (see the module's docstring for the order)."""
    previous = request.previous
    if request.fresh_requested:
        return _fresh(request, "requested")
    if previous is None:
        return _fresh(request, "there is no current version to start from")
    if previous.layout is None:
        return _fresh(
            request,
            f"the current version {previous.ref} has no layout record (imported, or built before in-place rebuilds)",
        )
    if request.unable is not None:
        return _fresh(request, f"in-place rebuilds cannot run here: {request.unable}")
    change, size = _layout_change(request, previous.layout)
    if change is not None:
        return _fresh(request, change)
    if previous.generation >= MAX_GENERATIONS:
        return _fresh(
            request, f"{previous.generation} in-place rebuilds since the last fresh layout (at most {MAX_GENERATIONS})"
        )
    fs = request.fs
    if fs is not None:
        if not fs.clean:
            return _fresh(request, f"the root file system of {previous.ref} does not pass e2fsck -f -n")
        if fs.noncontiguous_percent > FRAGMENTED_PERCENT:
            return _fresh(
                request,
                f"{fs.noncontiguous_percent:.1f} % of the files of {previous.ref} are fragmented "
                f"(over {FRAGMENTED_PERCENT:.0f} %)",
            )
        capacity = fs.blocks_total * fs.block_size
        full = 100.0 * request.content_bytes / capacity if capacity else 100.0
        if full > FULL_PERCENT:
            return _fresh(
                request, f"the new tree would fill {full:.0f} % of the root file system (over {FULL_PERCENT:.0f} %)"
            )
    generation = previous.generation + 1
    return Decision(
        "in_place",
        f"in place: the layout is unchanged, {previous.ref}'s disk is updated "
        f"(in-place rebuild {generation} since the last fresh one)",
        previous.ref,
        generation,
        size,
    )
