"""Delta re-imaging at hello (docs/delta.md): which version a machine's disk holds, per the server's record, and
what the planned version should need beyond it (``provision.wire.delta.predict``).

A machine holds a version when its newest run (``Store.last_run``):

- wrote an image (not an erase-only run) and ended ``done``, so its read-back of that version is recorded
  complete (``provision.states``: done only with a complete verification of the run's own digest);
- was planned with the same ``target_disk`` rule as the new plan (else the agent may pick another disk);

and the new plan erases nothing (an ``erase:`` step destroys what the disk holds), and the held version's index
can be read: a stored version's, or the one retention keeps for the machines that hold it
(``provision.images.retention.held_index``). A run that failed, or a later erase-only run, leaves the disk
unknown: nothing is held, the plan has no ``held`` and the prediction is the whole version.

The transfer: a run predicted to need at most ``UNICAST_SHARE`` of its version's download fetches its chunks by
HTTP whatever the recipe's or the config's transfer (``transfer_note``): a carousel pass sends every chunk of
the version, so a PC that needs a few would wait up to a whole pass for them, keep the carousel running for
nothing, and count among the runs that make ``auto`` go multicast (``Store.runs_wanting`` leaves it out).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from provision.images import ImageError, ImageStore, ImageVersion
from provision.images.index import ImageIndex
from provision.states import RunState
from provision.store import Store
from provision.wire.api import Report
from provision.wire.delta import HeldVersion, Prediction, predict
from provision.wire.index import Chunk

log = logging.getLogger(__name__)

UNICAST_SHARE = 0.25  # a run predicted to need at most this share of its version's download fetches by HTTP
HELD_DAYS = 400  # retention keeps the index of a version held by a machine whose run ended within these days
SIZES_CACHE = 8  # versions whose stored chunk sizes are kept in memory


@dataclass(frozen=True)
class Held:
    """The plan's ``held`` and the whole prediction (the share decides the transfer)."""

    plan: HeldVersion
    prediction: Prediction

    @property
    def small(self) -> bool:
        """Few enough bytes that the chunks come by HTTP, never from a carousel."""
        return self.prediction.share <= UNICAST_SHARE


def wire_chunks(index: ImageIndex) -> list[Chunk]:
    """A store index's chunks as the wire's (with their offsets)."""
    return [Chunk(i, index.offset(i), c.length, c.sha256) for i, c in enumerate(index.chunks)]


class Deltas:
    """The held version of a machine and the prediction for its new plan, over the store and the image store."""

    def __init__(self, store: Store, images: ImageStore) -> None:
        self.store = store
        self.images = images
        self._sizes: OrderedDict[str, dict[str, int]] = OrderedDict()
        self._lock = threading.Lock()

    def held(self, mac: str, version: ImageVersion, *, target_disk: Mapping[str, Any], erase: bool) -> Held | None:
        """What the machine's disk holds and what ``version`` should need beyond it; None when nothing is held
        (the reason logged)."""
        last = self.store.last_run(mac)
        if last is None or last.erase_only or last.state is not RunState.DONE:
            return None
        why = None
        if erase:
            why = "the plan erases every drive first"
        elif (self.store.run_plan(last.id) or {}).get("target_disk", {}) != dict(target_disk):
            why = "the recipe's target_disk changed"
        if why is not None:
            log.info("%s: holds %s@%s but %s: no delta", mac, last.image, last.label, why)
            return None
        try:
            index = self.images.held_index(last.image, last.digest)
            prediction = predict(wire_chunks(index), wire_chunks(version.index), self.sizes(version))
        except (ImageError, OSError) as exc:
            log.warning("%s: holds %s@%s, whose index cannot be read: %s: no delta", mac, last.image, last.label, exc)
            return None
        held = HeldVersion.of(last.image, last.label, last.digest, last.id, prediction, last.target)
        log.info("%s: holds %s@%s: %d of %d data chunks to fetch, %d of %d bytes to download (predicted)", mac,
                 last.image, last.label, prediction.chunks, prediction.total_chunks, prediction.download,
                 prediction.total_download)  # fmt: skip
        return Held(held, prediction)

    def sizes(self, version: ImageVersion) -> dict[str, int]:
        """The stored (compressed) size of each distinct chunk of ``version`` (a stat each, cached by digest)."""
        with self._lock:
            found = self._sizes.get(version.digest)
            if found is not None:
                self._sizes.move_to_end(version.digest)
                return found
        found = {sha: self.images.chunks.path(sha).stat().st_size for sha in version.index.unique_chunks()}
        with self._lock:
            self._sizes[version.digest] = found
            while len(self._sizes) > SIZES_CACHE:
                self._sizes.popitem(last=False)
        return found


def transfer_note(held: Held | None) -> str | None:
    """Why a run fetches by HTTP whatever its transfer says (a small delta), or None."""
    if held is None or not held.small:
        return None
    p = held.prediction
    return f"delta: {p.download} of {p.total_download} bytes predicted (at most {UNICAST_SHARE:.0%}): HTTP"


def fetched_of(report: Report) -> int | None:
    """The compressed bytes a run's report says it received: its transfer's (multicast and HTTP, repairs
    included), else its writer's ``bytes_fetched``; None when it says neither."""
    if report.transfer is not None:
        return report.transfer.bytes_http + report.transfer.bytes_multicast
    found = (report.writer or {}).get("bytes_fetched")
    return found if type(found) is int and found >= 0 else None


def target_of(report: Report) -> str | None:
    """The disk a run's agent wrote, as it named it (its writer's ``target``)."""
    found = (report.writer or {}).get("target")
    return found[:4096] if isinstance(found, str) else None


def held_for_retention(store: Store, image: str, *, now: float | None = None) -> set[str]:
    """Digests of ``image``'s versions that machines imaged within ``HELD_DAYS`` hold: what retention keeps the
    index of (``ImageStore.retain(..., held=...)``)."""
    return store.held_digests(image, since=(time.time() if now is None else now) - HELD_DAYS * 86400)
