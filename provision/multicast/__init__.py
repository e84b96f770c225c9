"""Rack multicast, the server's side (issue 16, docs/multicast.md): per image version a carousel that multicasts
the version's stored frames in a loop while agents listen (``sender``, ``pacing``), the registry of carousels
and listeners (``sessions``), and the transfer decision at hello (``choose``). The wire contract, shared with
the agent's receiver, is ``provision.wire.carousel``.

``Multicast`` ties them to the image store and the config: ``plan`` for a new run's version, ``call`` for an
agent's join / keepalive / leave (its token checked first by ``provision.runs``), ``close`` when the server stops.
"""

from __future__ import annotations

import logging
import os
import threading

from provision.config import MulticastConfig
from provision.images import ImageStore
from provision.multicast.choose import Choice, choose, group_for, plan_for
from provision.multicast.egress import Egress, tx_counter
from provision.multicast.sender import Sender, Target
from provision.multicast.sessions import MakeSender, Sessions, Status
from provision.wire.carousel import MulticastAnswer, MulticastCall, MulticastPlan, carousel_order
from provision.wire.index import Index

__all__ = ["Choice", "Multicast", "Sessions", "Status", "choose", "group_for", "plan_for"]

log = logging.getLogger(__name__)


class Multicast:
    """The server's carousels over ``images``. ``address`` / ``device``: where they send from (the server's
    address and its serve interface; None: the routing table decides)."""

    def __init__(
        self,
        images: ImageStore,
        config: MulticastConfig,
        *,
        address: str | None = None,
        device: str | None = None,
        make_sender: MakeSender | None = None,
    ) -> None:
        self.images = images
        self.config = config
        self.address = address
        self.device = device
        self._orders: dict[str, list[str]] = {}  # version digest -> carousel_order of its index
        self._lock = threading.Lock()
        self.sessions = Sessions(make_sender or self._sender)

    def order(self, image: str, digest: str) -> list[str]:
        """The carousel order of a version (read from its index once)."""
        with self._lock:
            found = self._orders.get(digest)
        if found is None:
            # the agent's own reading of the same index bytes: the chunk numbers cannot differ
            found = carousel_order(Index.from_bytes(self.images.index_bytes(image, digest)).chunks)
            with self._lock:
                self._orders[digest] = found
        return found

    def plan(self, image: str, digest: str) -> MulticastPlan | None:
        """The plan's ``multicast`` for a version (None: it has no data chunk, nothing to send)."""
        chunks = len(self.order(image, digest))
        return plan_for(digest, chunks, self.config) if chunks else None

    def call(self, run: str, mac: str | None, image: str, plan: MulticastPlan, msg: MulticastCall) -> MulticastAnswer:
        """An agent's join, keepalive or leave for ``run``, whose plan gave it ``plan``."""
        self.order(image, plan.digest)  # the sender needs it (after a restart, the first call loads it)
        if msg.event == "leave":
            status = self.sessions.leave(run, msg.reason)
        elif msg.event == "join":
            status = self.sessions.join(run, mac, plan)
        else:
            status = self.sessions.keepalive(run, mac, plan, msg.chunks_done, msg.bytes_received)
        return MulticastAnswer(run=run, sending=status.sending, listeners=status.listeners, keepalive=plan.keepalive)

    def leave(self, run: str, reason: str) -> None:
        """``run`` ended: it listens no more (nothing if it did not)."""
        if self.sessions.listening(run):
            self.sessions.leave(run, reason)

    def close(self) -> None:
        self.sessions.close()

    # ---------------------------------------------------------------------------------------- insides
    def _sender(self, plan: MulticastPlan) -> Sender:
        with self._lock:
            order = self._orders[plan.digest]
        target = Target(plan.group, plan.port, self.address, self.device)
        counter = tx_counter(self.device) if self.device else None
        egress = Egress(plan.rate, counter) if counter is not None else None
        if self.device is None:
            log.info("carousel %s: no serve interface, so no byte counter: it will not make room for other traffic",
                     plan.digest[:12])  # fmt: skip
        return Sender(plan.digest, order, self._read_frame, target, plan.rate, egress=egress)

    def _read_frame(self, sha256: str) -> bytes:
        """The stored frame of a chunk, as ``GET /chunks/<sha256>`` sends it (checked first)."""
        with self.images.open_chunk(sha256) as frame:
            self.images.frames.check(frame)
            parts, done = [], 0
            while done < frame.size:
                part = os.pread(frame.fd, frame.size - done, done)
                if not part:
                    raise OSError(f"chunk {sha256}: file ends at {done} of {frame.size} bytes")
                parts.append(part)
                done += len(part)
            return b"".join(parts)
