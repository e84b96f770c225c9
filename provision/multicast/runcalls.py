"""The runs' side of multicast (moved out of ``provision.runs``): the transfer of a new run at hello and an
agent's join / keepalive / leave of its run's carousel, once ``provision.runs`` has checked its token.

- ``transfer``: the plan's ``multicast`` (``choose``: the recipe's or the config's mode; ``auto`` counts the
  runs wanting the version), or None: by HTTP. A run that needs few bytes beyond the version its disk holds
  (``http_because``: provision.delta's note) fetches by HTTP whatever the mode says, and the runs counted for
  ``auto`` leave such runs out (``small``: docs/delta.md).
- ``call``: the carousel's answer; a keepalive makes no event, a join or a leave the run's first of its kind,
  then at most one every ``every`` seconds (an agent with a token cannot fill the events table).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from provision.errors import RunConflict
from provision.images import ImageError
from provision.multicast import Multicast
from provision.multicast.choose import choose
from provision.store import Run, Store
from provision.wire.carousel import MulticastAnswer, MulticastCall, MulticastPlan

log = logging.getLogger(__name__)


class RunCarousels:
    """The multicast of runs over ``store``; ``clock`` throttles the join and leave events."""

    def __init__(self, store: Store, multicast: Multicast | None, clock: Callable[[], float], every: float) -> None:
        self.store = store
        self.multicast = multicast
        self.clock = clock
        self.every = every
        self._last: dict[tuple[str, str], float] = {}  # (run, join/leave) -> its last stored event

    def transfer(
        self, mac: str, wanted: str | None, image: str, digest: str, *, http_because: str | None = None,
        small: int | None = None,
    ) -> MulticastPlan | None:  # fmt: skip
        """The plan's carousel when the new run's chunks come by multicast; None: by HTTP."""
        if self.multicast is None:
            return None
        if http_because is not None:
            log.info("%s: chunks by HTTP: %s", mac, http_because)
            return None
        config = self.multicast.config
        since = time.time() - config.recent_minutes * 60
        choice = choose(wanted, config, 1 + self.store.runs_wanting(digest, since=since, mac=mac, small=small))
        try:
            plan = self.multicast.plan(image, digest) if choice.multicast else None
        except (ImageError, OSError, ValueError) as exc:  # ValueError: the index does not read
            log.warning("%s: multicast of %s@%s not planned: %s", mac, image, digest[:12], exc)
            plan = None
        log.info("%s: chunks by %s: %s", mac, "multicast" if plan else "HTTP", choice.why)
        return plan

    def call(self, run: Run, msg: MulticastCall) -> MulticastAnswer:
        """An agent's join, keepalive or leave of ``run``'s carousel (its token checked, the run open);
        RunConflict when the run's plan has no multicast."""
        planned = (self.store.run_plan(run.id) or {}).get("multicast")
        if planned is None or self.multicast is None:
            raise RunConflict(f"run {run.id}'s plan has no multicast: its chunks come by HTTP", run=run.id,
                              state=run.state.value)  # fmt: skip
        answer = self.multicast.call(run.id, run.mac, run.image, MulticastPlan.from_dict(planned), msg)
        if msg.event != "keepalive" and self._due(run.id, msg.event):
            detail = {"run": run.id, "event": msg.event, "chunks_done": msg.chunks_done,
                      "bytes_received": msg.bytes_received, "listeners": answer.listeners}  # fmt: skip
            self.store.event(run.mac, "multicast", {**detail, **({"reason": msg.reason} if msg.reason else {})})
        return answer

    def reported(self, run: str) -> None:
        """The run reported: its throttling is forgotten."""
        for event in ("join", "leave"):
            self._last.pop((run, event), None)

    def ended(self, run: str) -> None:
        """After the report's transaction: the run leaves its carousel."""
        if self.multicast is not None:
            self.multicast.leave(run, "the run reported")

    def _due(self, run: str, event: str) -> bool:
        now = self.clock()
        last = self._last.get((run, event))
        if last is not None and now - last < self.every:
            return False
        self._last[(run, event)] = now
        return True
