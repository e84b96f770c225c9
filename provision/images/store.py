"""``ImageStore``: the versions of every image (``provision.images.versions``) with what is done to them as a
whole: verify, export for bmaptool, retention and garbage collection, each in its own module.

The dependencies go one way: this module imports versions, verify, export and retention; those import
versions (export also verify's ``ChunkProblem``, the one way to name a bad chunk), never this module.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from pathlib import Path

from provision.images import export as _export
from provision.images import retention as _retention
from provision.images import verify as _verify
from provision.images.export import StoredPart
from provision.images.importer import Progress, default_workers
from provision.images.index import ImageIndex, ImageVersion
from provision.images.verified import Frame
from provision.images.versions import ImageInfo, Versions

__all__ = ["ImageInfo", "ImageStore", "StoredPart"]


class ImageStore(Versions):
    """All images of one server under ``root``. Safe to share between threads and processes."""

    def retain(
        self,
        name: str,
        keep: int = 3,
        in_use: Collection[str] = (),
        held: Collection[str] | None = None,
        pinned: _retention.Pins | None = None,
    ) -> _retention.RetentionReport:
        """Remove the versions of ``name`` beyond the ``keep`` newest, except the current one and those in
        ``in_use`` (digests of running imaging runs), keeping the index of those in ``held`` (versions machines
        hold: delta re-imaging, docs/delta.md), then garbage-collect unreferenced chunks but ``pinned`` ones
        (captures in flight)."""
        return _retention.retain(self, name, keep=keep, in_use=in_use, held=held, pinned=pinned)

    def held_index(self, name: str, digest: str) -> ImageIndex:
        """The index of a stored version, or of a removed one machines hold (``retention.held_index``)."""
        return _retention.held_index(self, name, digest)

    def gc(self, pinned: _retention.Pins | None = None) -> _retention.GcReport:
        """Remove chunks no index of any image references (but ``pinned`` ones: captures in flight), and temp
        files left by crashes."""
        with self.lock.exclusive("gc"):
            return _retention.collect(self, pinned)

    def verify(self, ref: str, *, workers: int | None = None, progress: Progress | None = None) -> _verify.VerifyReport:
        """Re-read every chunk of a version (decompress, sha256, compare) and the index's own digest."""
        return _verify.verify(self, ref, workers=workers or default_workers(), progress=progress)

    def iter_zst(self, version: ImageVersion) -> Iterator[bytes | Path]:
        """``disk.img.zst`` as parts in disk order: a stored frame's path (for sendfile) or a hole's frame."""
        return _export.iter_zst(self, version)

    def zst_parts(self, version: ImageVersion) -> tuple[list[bytes | StoredPart], int]:
        """The parts of ``disk.img.zst`` (hole frames, checked stored frames with their sizes) and the total
        size (for Content-Length). MissingChunk / CorruptImage naming the first bad chunk: nothing to send."""
        return _export.zst_parts(self, version)

    def open_part(self, version: ImageVersion, part: StoredPart, *, check: bool = True) -> Frame:
        """The checked frame of one stored part, open for sending (close it after). CorruptImage naming the
        position if its file went missing, bad or changed size since ``zst_parts``. ``check=False``: see
        ``export.open_part``."""
        return _export.open_part(self, version, part, check=check)

    def export(self, ref: str, outdir: Path) -> tuple[Path, Path]:
        """Write ``OUTDIR/disk.img.zst`` and ``OUTDIR/disk.bmap`` for ``bmaptool copy``: every chunk checked
        first; MissingChunk / CorruptImage naming the first bad one, and no file written, otherwise."""
        return _export.export(self, self.resolve(ref), outdir)
