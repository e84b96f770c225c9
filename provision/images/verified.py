"""Stored frames opened for sending: ``/chunks/<sha256>``, ``disk.img.zst`` and ``image export`` send a chunk
file only from a descriptor that ``ChunkStore.open`` got without following a symlink (a regular file inside
the store), and only once its bytes passed ``ChunkStore.check``: decoded, sha256 equal to its name, the
check ``provision image verify`` makes.

Checking a 4 MiB chunk costs a few milliseconds; sending it with sendfile costs almost nothing. So each
process keeps a record of the chunk files it has checked (``VerifiedFrames``: in memory, least recently used
entries dropped past ``RECORD_LIMIT``), keyed by what fstat of the open descriptor says the file is: device,
inode, size, mtime_ns, ctime_ns. A write, truncation or chmod moves ctime (which utime cannot set back) and
an atomic replace gives a new inode, so the next open checks the file again. A frame found bad is recorded
as bad under its key: asking for it again costs no decoding, and it is never sent.

Requests for the same unchecked chunk at once (a classroom of PCs after a server restart) wait for one check:
checks are serialised per chunk by one of ``STRIPES`` locks, and a waiter finds the result in the record.

Like git's "racily clean" index entries, a file changed less than ``RACY_NS`` before its check is checked but
not recorded: a file system's timestamps are coarse (a kernel tick, a second on some), so a write in the same
tick as the check could leave the key unchanged. Such a file is checked again at its next open.

The descriptor checked is the descriptor sent: a file swapped by a rename after the check does not reach the
client (the old inode is sent, or the new one is checked first). Not seen: bits rotting on the medium under
an unchanged inode after the first check, or a write in place while the frame is being sent. The agent checks
the sha256 of every chunk it receives, and ``provision image verify`` reads every chunk from the disk.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

from provision.images.chunks import ChunkStore
from provision.images.errors import CorruptImage, ImageError

RECORD_LIMIT = 1 << 17  # chunk files (512 GiB of distinct 4 MiB chunks); about 200 bytes each
RACY_NS = 2_000_000_000  # a file changed this recently is checked but not recorded
STRIPES = 64  # locks that serialise the checks of one chunk (a chunk's lock is chosen by its sha256)
FileKey = tuple[int, int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns


def file_key(st: os.stat_result) -> FileKey:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class Frame:
    """One stored frame open for sending: ``size`` bytes from ``fd``. ``checked`` is True once its bytes
    passed ``ChunkStore.check`` under its current ``key`` (now, or recorded earlier). Close it after use."""

    def __init__(self, sha256: str, fd: int, key: FileKey, *, checked: bool) -> None:
        self.sha256 = sha256
        self.fd = fd
        self.key = key
        self.checked = checked
        self._file: BinaryIO | None = None

    @property
    def size(self) -> int:
        return self.key[2]

    def file(self) -> BinaryIO:
        """A binary file object on the same descriptor (what ``loop.sendfile`` takes); closed with the frame."""
        if self._file is None:
            self._file = os.fdopen(self.fd, "rb", buffering=0, closefd=False)
        return self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Frame:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VerifiedFrames:
    """The chunk files this process has checked, by sha256: (file key, None if good or the problem)."""

    def __init__(self, chunks: ChunkStore, *, limit: int = RECORD_LIMIT, racy_ns: int = RACY_NS) -> None:
        self.chunks = chunks
        self.limit = limit
        self.racy_ns = racy_ns
        self._record: OrderedDict[str, tuple[FileKey, str | None]] = OrderedDict()
        self._lock = threading.Lock()
        self._stripes = [threading.Lock() for _ in range(STRIPES)]
        self.checks = 0  # frames decoded and hashed (first opens, changed files): for tests and benchmarks

    def open(self, sha256: str) -> Frame:
        """The stored frame of ``sha256``, open (no symlink followed), ``checked`` if the record says it is
        good as it is now. MissingChunk if absent; CorruptImage if unsafe, unreadable or recorded bad."""
        fd = self.chunks.open(sha256)
        try:
            key = file_key(os.fstat(fd))
            good = self._known(sha256, key)
        except BaseException:
            os.close(fd)
            raise
        return Frame(sha256, fd, key, checked=good)

    def _known(self, sha256: str, key: FileKey) -> bool:
        """True if the record has ``key`` as good; CorruptImage if as bad; False if it does not know it."""
        with self._lock:
            known = self._record.get(sha256)
            if known is None or known[0] != key:
                return False
            self._record.move_to_end(sha256)
        if known[1] is not None:
            raise CorruptImage(known[1], chunk=sha256, path=str(self.chunks.path(sha256)))
        return True

    def check(self, frame: Frame) -> None:
        """Check ``frame`` unless it is ``checked`` already, and record the result. CorruptImage if bad."""
        if frame.checked:
            return
        with self._stripes[int(frame.sha256[:8], 16) % STRIPES]:
            if self._known(frame.sha256, frame.key):  # checked by another thread while this one waited
                frame.checked = True
                return
            self._check(frame)

    def _check(self, frame: Frame) -> None:
        for _ in range(3):
            started = time.time_ns()
            problem: CorruptImage | None = None
            data = self.chunks.read_frame(frame.sha256, frame.fd)
            try:
                self.chunks.check(frame.sha256, data)
            except CorruptImage as exc:
                problem = exc
            with self._lock:
                self.checks += 1
            now = file_key(os.fstat(frame.fd))
            if now != frame.key:  # written while read: read it again
                frame.key = now
                continue
            if started - max(now[3], now[4]) >= self.racy_ns:
                self._remember(frame.sha256, now, None if problem is None else problem.message)
            if problem is not None:
                raise problem
            frame.checked = True
            return
        path = self.chunks.path(frame.sha256)
        raise CorruptImage(f"chunk {frame.sha256}: {path} kept changing while it was checked",
                           chunk=frame.sha256, path=str(path))  # fmt: skip

    def open_checked(self, sha256: str) -> Frame:
        """``open`` then ``check``: a frame that may be sent. MissingChunk / CorruptImage otherwise."""
        frame = self.open(sha256)
        try:
            self.check(frame)
        except BaseException:
            frame.close()
            raise
        return frame

    def check_all(self, shas: Iterable[str], *, workers: int) -> dict[str, int | ImageError]:
        """Open and check each chunk (in parallel: zstd and sha256 release the GIL): its frame size, or the
        error that refuses it. Chunks the record knows cost an open and an fstat."""

        def one(sha256: str) -> int | ImageError:
            try:
                with self.open_checked(sha256) as frame:
                    return frame.size
            except ImageError as exc:
                return exc

        todo = list(dict.fromkeys(shas))
        if len(todo) <= 1 or workers <= 1:
            return {sha: one(sha) for sha in todo}
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="image-check") as pool:
            return dict(zip(todo, pool.map(one, todo), strict=True))

    def _remember(self, sha256: str, key: FileKey, problem: str | None) -> None:
        with self._lock:
            self._record[sha256] = (key, problem)
            self._record.move_to_end(sha256)
            while len(self._record) > self.limit:
                self._record.popitem(last=False)
