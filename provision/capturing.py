"""Capture runs (``Capturing``, used by ``provision.runs``; docs/capture.md): a golden PC's disk made a new
version of an image, the agent sending only the chunks the server lacks. The protocol is the wire's
(``provision.wire.capture``):

- ``start``: a run of kind capture and its ``CapturePlan`` (the chunk size of the image's current version, so
  unchanged chunks are shared; the store's default for a new image); the machine's request is used up;
- ``offer``: chunks in disk order, recorded (``Store.record_offer`` checks the order); the answer names the
  sha256s the chunk store lacks and that were not asked for before in the run; the run moves to ``capturing``;
- ``upload``: one zstd frame of a chunk the run was asked for, decoded (at most the chunk size), its sha256
  checked, stored (``ChunkStore.put``); a bad frame or a wrong hash is refused (422) and nothing is stored;
- ``done``: every position offered, every chunk read back and the disk's sha256 checked, the partition table
  read, the version written with its provenance and published (``provision.images.capture``); the run ends
  ``done`` naming the version, or ``failed`` with the reason (nothing published). A failure report ends it too.

The run's token lives ``token_ttl`` seconds more with each offer and upload (a capture of a large disk over a
slow link outlasts the token's first lifetime).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import zstandard

from provision.errors import FatalError, NotFound, RunConflict
from provision.images import DEFAULT_CHUNK_SIZE, ImageError, ImageStore
from provision.images.capture import assemble, zero_sha256
from provision.images.index import check_name
from provision.states import MachineState, RunState, is_final
from provision.store import Run, Store
from provision.store.captures import CaptureRun
from provision.wire.api import CaptureAnswer, Report, RunAnswer, WaitAnswer
from provision.wire.capture import (
    DEFAULT_LEVEL,
    DEFAULT_OFFER,
    CaptureDone,
    CaptureOffer,
    CaptureOfferAnswer,
    CapturePlan,
    CaptureUploadAnswer,
)

log = logging.getLogger(__name__)

LIVE = "provision live build"  # what makes a live environment whose agent captures
PROGRESS_EVERY = 2.0  # seconds: at most one stored capture progress event per run in this window
TOKEN_TTL = 6 * 3600.0  # seconds a run's token lives after its last accepted call (config boot.token_ttl_seconds)
OpenRun = Callable[[str, str, "str | None"], Run]  # (run id, token, remote) -> the open run, or raise


class UploadRefused(FatalError):
    """A chunk upload whose body is not one zstd frame of at most the chunk size, or whose bytes do not hash to
    the sha256 it was sent as: nothing is stored (HTTP 422, with the facts)."""

    status_code = 422
    public_facts = ("run", "chunk", "found", "bytes")


def upload_limit(chunk_size: int) -> int:
    """The largest body a chunk upload may have: zstd's worst case for ``chunk_size`` bytes, with room."""
    return chunk_size + (chunk_size >> 7) + (1 << 12)


def decode(frame: bytes, chunk_size: int, *, what: str) -> bytes:
    """The plain bytes of one zstd frame of 1 to ``chunk_size`` bytes (UploadRefused otherwise). A size the frame
    declares is checked before it is decoded: a frame never makes more than the chunk size in memory."""
    problem = f"{what}: not one zstd frame of at most {chunk_size} bytes"
    try:
        declared = zstandard.get_frame_parameters(frame).content_size
        if declared not in (zstandard.CONTENTSIZE_UNKNOWN, zstandard.CONTENTSIZE_ERROR) and declared > chunk_size:
            raise UploadRefused(f"{problem} (it declares {declared})", bytes=len(frame))
        plain = zstandard.ZstdDecompressor().decompress(frame, max_output_size=chunk_size)
    except zstandard.ZstdError as exc:
        raise UploadRefused(f"{problem} ({exc})", bytes=len(frame)) from None
    if not plain or len(plain) > chunk_size:
        raise UploadRefused(f"{what}: the frame decodes to {len(plain)} bytes", bytes=len(frame))
    return plain


class Capturing:
    """Capture runs over the store and the image store; ``open_run`` is ``Runs.open_run`` (token, remote)."""

    def __init__(
        self,
        store: Store,
        images: ImageStore | None,
        open_run: OpenRun,
        token_ttl: float = TOKEN_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.images = images
        self.open_run = open_run
        self.token_ttl = token_ttl
        self.clock = clock
        self._last_progress: dict[str, float] = {}
        self._finishing: dict[str, threading.Lock] = {}  # held while a run's end is made: a second done waits
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------ start
    def answer(
        self,
        mac: str,
        image: str,
        *,
        recipe: str | None,
        target_disk: dict[str, Any],
        requested_by: str | None,
        token: str | None,
        live: tuple[str | None, str | None],
        facts: dict[str, Any],
        able: bool,
        ident: dict[str, str | None],
    ) -> CaptureAnswer | WaitAnswer:
        """The hello's answer when a capture is wanted: a capture run (the machine's state and ``ident``, its vendor,
        product and serial, recorded as for any plan), or a wait with the reason when the live environment cannot
        capture (``able``: its hello says so) or the image cannot take one."""
        reason = None
        if not able:
            reason = f"capture as {image} asked for, but this live environment cannot capture: rebuild it with {LIVE}"
        else:
            self.store.set_state(mac, MachineState.WAITING, None, recipe=recipe, **ident)
            try:
                return self.start(mac, image, recipe=recipe, target_disk=target_disk, requested_by=requested_by,
                                  token=token, live=live, facts=facts)  # fmt: skip
            except ImageError as exc:
                reason = f"capture as {image} not possible: {exc}"
        self.store.set_state(mac, MachineState.WAITING, reason, recipe=recipe, **ident)
        log.info("%s: capture as %s: waits: %s", mac, image, reason)
        return WaitAnswer(reason)

    def start(
        self,
        mac: str,
        image: str,
        *,
        recipe: str | None,
        target_disk: dict[str, Any],
        requested_by: str | None,
        token: str | None,
        live: tuple[str | None, str | None],
        facts: dict[str, Any],
    ) -> CaptureAnswer:
        """A new capture run of ``mac`` as ``image``. ImageError when there is no image store or the name is bad."""
        if self.images is None:
            raise ImageError("this server has no image store")
        check_name(image)
        current = self.images.current(image) if self.images.digests(image) else None
        plan = CapturePlan(
            image=image, chunk_size=DEFAULT_CHUNK_SIZE if current is None else current.index.chunk_size,
            target_disk=target_disk, offer=DEFAULT_OFFER, level=DEFAULT_LEVEL,
            current=None if current is None else current.label,
        )  # fmt: skip
        with self.store.atomic():
            run = self.store.create_run(
                mac, recipe=recipe, image=image, label="", digest="", token=token, plan={"capture": plan.to_dict()},
                live_address=live[0], host_key=live[1], facts=facts, capture=image,
            )  # fmt: skip
            self.store.begin_capture(run.id, image, plan.chunk_size, requested_by)
        log.info("%s: capture run %s: image %s, chunks of %d bytes (current %s, asked by %s)", mac, run.id, image,
                 plan.chunk_size, plan.current or "none", requested_by or f"recipe {recipe}")  # fmt: skip
        return CaptureAnswer(run=run.id, capture=plan, recipe=recipe)

    # -------------------------------------------------------------------------------------- the calls
    def _capture_run(self, run: Run) -> CaptureRun:
        found = None if run.capture is None else self.store.capture_run(run.id)
        if found is None:
            raise RunConflict(f"run {run.id} is not a capture", run=run.id, state=run.state.value)
        return found

    def offer(self, run_id: str, msg: CaptureOffer, remote: str | None = None) -> CaptureOfferAnswer:
        """Chunks of the disk recorded; the answer names those to upload."""
        if self.images is None:
            raise NotFound("this server has no image store")
        # the image store's lock held shared (as an import holds it): a gc sweeps either before the offer looks
        # up what the store has (and the chunks are asked for) or after they are recorded, pinned (retention.py)
        with self.images.lock.shared(f"capture offer, run {run_id[:64]}"), self.store.atomic():
            run = self.open_run(run_id, msg.token, remote)
            self._capture_run(run)
            if run.state is RunState.INVENTORIED:
                run = self.store.set_run_state(run.id, RunState.CAPTURING)
            offered = self.store.record_offer(run.id, msg.disk_size, msg.first, list(msg.chunks))
            size = self._capture_run(run).chunk_size
            holes = {zero_sha256(size), zero_sha256(msg.disk_size - (msg.disk_size - 1) // size * size)}
            missing = [sha for sha in offered.new if sha not in holes and not self.images.chunks.has(sha)]
            self.store.mark_asked(run.id, missing)
            self.store.extend_token(run.mac, msg.token, self.token_ttl)
            self._progress(run, self._capture_run(run))
        log.info("%s: run %s: offer of positions %d..%d: %d to upload", run.mac, run.id, msg.first,
                 msg.first + len(msg.chunks) - 1, len(missing))  # fmt: skip
        return CaptureOfferAnswer(missing=missing, offered=offered.offered)

    def upload_limit(self, run_id: str, token: str, remote: str | None = None) -> int:
        """The largest upload body of the run, its caller checked first (``open_run``: the body of a caller
        without the run's token is never read); RunConflict for a run that is not a capture."""
        return upload_limit(self._capture_run(self.open_run(run_id, token, remote)).chunk_size)

    def upload(
        self, run_id: str, sha256: str, token: str, body: bytes, remote: str | None = None
    ) -> CaptureUploadAnswer:
        """One chunk the run was asked for, checked and stored."""
        if self.images is None:
            raise NotFound("this server has no image store")
        run = self.open_run(run_id, token, remote)
        capture = self._capture_run(run)
        if not self.store.capture_asked(run.id, sha256):
            raise RunConflict(f"run {run.id}: chunk {sha256} was not asked for (offer it first)", run=run.id,
                              state=run.state.value)  # fmt: skip
        what = f"run {run.id}: chunk {sha256}"
        try:
            plain = decode(body, capture.chunk_size, what=what)
        except UploadRefused as exc:
            raise UploadRefused(exc.message, run=run.id, chunk=sha256, bytes=len(body)) from None
        found = hashlib.sha256(plain).hexdigest()
        if found != sha256:
            log.warning("%s: %s: the upload hashes to %s: refused", run.mac, what, found)
            raise UploadRefused(f"{what}: the uploaded bytes hash to {found}: not stored", run=run.id, chunk=sha256,
                                found=found, bytes=len(body))  # fmt: skip
        put = self.images.chunks.put(plain, sha256=sha256)
        with self.store.atomic():
            capture = self.store.record_upload(run.id, sha256, sent=len(body), new=put.new)
            self.store.extend_token(run.mac, token, self.token_ttl)
            self._progress(run, capture)
        return CaptureUploadAnswer(sha256=sha256, new=put.new, stored_bytes=put.stored_bytes)

    def _progress(self, run: Run, capture: CaptureRun) -> None:
        """A ``progress`` event (stage ``capturing``: the bytes offered so far of the disk's) at most every
        PROGRESS_EVERY seconds, for the dashboard's tile."""
        now = self.clock()
        total = capture.disk_size or 0
        done = min(total, capture.offered * capture.chunk_size)
        last = self._last_progress.get(run.id)
        if last is None or now - last >= PROGRESS_EVERY or done >= total:
            self._last_progress[run.id] = now
            self.store.event(run.mac, "progress", {"run": run.id, "stage": RunState.CAPTURING.value,
                                                   "bytes_done": done, "bytes_total": total, "rate": None,
                                                   "uploaded_bytes": capture.uploaded_bytes})  # fmt: skip

    # ------------------------------------------------------------------------------------------- end
    def done(self, run_id: str, msg: CaptureDone, remote: str | None = None) -> RunAnswer:
        """The capture's end: the version made and published (the run ``done``), or the run ``failed`` with
        the reason. The same done again once the run ended (its answer was lost) gets the same answer; one sent
        again while the first is being made (the agent's request timed out) waits for it and gets its answer."""
        try:
            run = self.open_run(run_id, msg.token, remote)
        except RunConflict:  # the token and the caller were checked: the run has ended
            return self._ended(run_id)
        capture = self._capture_run(run)
        with self._finishing_run(run.id):
            if is_final(self._ended_state(run.id)):
                return self._ended(run.id)
            problem = self._problem(capture, msg)
            if problem is None:
                problem, run = self._publish(run, capture, msg)
            if problem is not None:
                if is_final(self._ended_state(run.id)):  # superseded meanwhile: its end stays
                    return self._ended(run.id)
                run = self.fail(run, problem)
        return RunAnswer(run.id, run.state.value, run.reason)

    @contextlib.contextmanager
    def _finishing_run(self, run_id: str) -> Iterator[None]:
        """Held while the run's end is made (a done, a failure report): another one waits for it, then finds the
        run ended."""
        with self._lock:
            finishing = self._finishing.setdefault(run_id, threading.Lock())
        with finishing:
            try:
                yield
            finally:
                with self._lock:
                    self._finishing.pop(run_id, None)
                self._last_progress.pop(run_id, None)

    def _ended_state(self, run_id: str) -> RunState:
        found = self.store.run(run_id)
        return RunState.FAILED if found is None else found.state

    def _ended(self, run_id: str) -> RunAnswer:
        """The answer of a capture run that has ended (RunConflict for any other run)."""
        ended = self.store.run(run_id)
        if ended is None or ended.capture is None or not is_final(ended.state):
            raise RunConflict(f"run {run_id[:64]} is not a capture that ended", run=run_id[:64])
        return RunAnswer(ended.id, ended.state.value, ended.reason)

    def _problem(self, capture: CaptureRun, msg: CaptureDone) -> str | None:
        positions = capture.positions
        if capture.disk_size is None or positions is None:
            return "the agent offered no chunk before its end"
        if msg.disk_size != capture.disk_size:
            return f"the end says the disk is {msg.disk_size} bytes, the offers said {capture.disk_size}"
        if capture.offered != positions or msg.chunks != positions:
            return (f"{capture.offered} of the disk's {positions} chunk positions were offered (the end counts "
                    f"{msg.chunks}): the capture stopped early")  # fmt: skip
        return None

    def _publish(self, run: Run, capture: CaptureRun, msg: CaptureDone) -> tuple[str | None, Run]:
        assert self.images is not None
        facts = self.store.run_facts(run.id)
        at = datetime.now(UTC)
        captured = {
            "mac": run.mac, "serial": msg.serial or facts.get("serial"), "vendor": facts.get("vendor"),
            "product": facts.get("product"), "run": run.id, "at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "disk": msg.disk, "model": msg.model, "system_serial": facts.get("serial"),
            "filesystems": [fs.to_dict() for fs in msg.filesystems],
            "free_bytes": sum(fs.free_bytes for fs in msg.filesystems), "read_bytes": msg.read_bytes,
            "uploaded_chunks": capture.uploaded_chunks, "uploaded_bytes": capture.uploaded_bytes,
        }  # fmt: skip
        try:
            made = assemble(
                self.images, capture.image, self.store.capture_chunks(run.id), chunk_size=capture.chunk_size,
                disk_size=capture.disk_size or 0, sector_size=msg.sector_size, sha256=msg.sha256,
                provenance={"captured": captured}, created=at, publish=False,
            )  # fmt: skip
            if is_final(self._ended_state(run.id)):  # superseded while read back (the PC booted again)
                log.warning("%s: run %s ended while its disk was read back: %s not published", run.mac, run.id,
                            made.version.ref)  # fmt: skip
                return None, self.store.run(run.id) or run
            self.images.publish(made.version)
        except (ImageError, OSError) as exc:
            log.warning("%s: run %s: capture not published: %s", run.mac, run.id, exc)
            return f"the captured disk was not published: {exc}", run
        version = made.version
        detail = {"run": run.id, "image": version.name, "label": version.label, "digest": version.digest,
                  "chunks": made.chunks, "holes": made.holes, "uploaded_chunks": capture.uploaded_chunks,
                  "new_chunks": capture.new_chunks, "uploaded_bytes": capture.uploaded_bytes,
                  "read_bytes": msg.read_bytes, "seconds": msg.seconds}  # fmt: skip
        with self.store.atomic():
            self.store.set_captured(run.id, version.label, version.digest)
            self.store.event(run.mac, "captured", detail)
            run = self.store.set_run_state(run.id, RunState.DONE, f"captured as {version.ref}")
        log.info("%s: run %s: captured as %s (%d chunks, %d uploaded, %d new, %d bytes sent)", run.mac, run.id,
                 version.ref, made.chunks, capture.uploaded_chunks, capture.new_chunks,
                 capture.uploaded_bytes)  # fmt: skip
        return None, run

    def report(self, run: Run, msg: Report) -> RunAnswer:
        """A report on a capture run: a failure ends it ``failed`` with its reason (once a done being made has
        ended it, that end is the answer); a success is refused (409: a capture ends with capture/done)."""
        if msg.ok:
            raise RunConflict(f"run {run.id} is a capture: it ends with capture/done", run=run.id,
                              state=run.state.value)  # fmt: skip
        with self._finishing_run(run.id):  # a done being made (the agent's request timed out) ends the run first
            if is_final(self._ended_state(run.id)):
                return self._ended(run.id)
            ended = self.fail(run, msg.reason or "the agent reports failure, no reason given")
        return RunAnswer(ended.id, ended.state.value, ended.reason)

    def fail(self, run: Run, reason: str) -> Run:
        """The capture run ends ``failed`` with ``reason`` (nothing is published); the operator's request stays
        for the machine's next network boot (``Store.keep_request``)."""
        with self.store.atomic():
            self.store.event(run.mac, "run-failed", {"run": run.id, "reason": reason})
            ended = self.store.set_run_state(run.id, RunState.FAILED, reason[:2000])
            self.store.keep_request(run.id)  # captured again at the next boot, never imaged in its place
        self._last_progress.pop(run.id, None)
        log.info("%s: capture run %s failed: %s", run.mac, run.id, reason)
        return ended
