"""Live updates: which machines changed, read from the store's event log, pushed to browsers as Server-Sent
Events (``text/event-stream``).

Every record the agents' calls make (a hello, a progress report, a run's move, a hook's result, a boot script)
writes an event in the same transaction (``provision.store``). One ``Feed`` per server reads the events after
the last id it saw, every ``interval`` seconds while at least one browser listens, and tells each listener
the MACs that changed. The stream handler (``provision.dashboard.routes``) then renders those machines' tiles
in the browser's language and sends each as an ``event: tile`` whose data is JSON ``{"mac", "number",
"stage", "html"}``; the page's script replaces the tile (or adds it). The store is the one source: a change made
by another process (``provision hooks run``, the CLI) shows up the same way, and nothing is lost when the
server restarts (the browser reconnects, and the page it reloads is current).

A stream sends a comment every ``KEEPALIVE`` seconds (proxies and browsers keep it open) and ends when the
server stops (``Feed.close``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from provision.store import Store

log = logging.getLogger(__name__)

KEEPALIVE = 15.0
MAX_LISTENERS = 256  # browsers streaming at once: a wall screen, a few phones and laptops; more is a mistake or abuse
BATCH = 2000  # events read per poll at most (the rest on the next poll)


class Listener:
    """One browser's stream: the MACs changed since it last took them."""

    def __init__(self) -> None:
        self.pending: set[str] = set()
        self.woken = asyncio.Event()
        self.closed = False

    def tell(self, macs: set[str]) -> None:
        self.pending |= macs
        self.woken.set()

    async def changes(self, timeout: float) -> set[str] | None:
        """The MACs changed (empty after ``timeout`` with none); None once the feed closed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.woken.wait(), timeout)
        if self.closed:
            return None
        self.woken.clear()
        taken, self.pending = self.pending, set()
        return taken


class Feed:
    """Reads new events from the store and wakes the listeners (one poller task while anyone listens)."""

    def __init__(self, store: Store, interval: float = 1.0) -> None:
        self.store = store
        self.interval = interval
        self.listeners: set[Listener] = set()
        self._last: int | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def full(self) -> bool:
        """As many streams as MAX_LISTENERS are open: a new one is refused (503, the browser retries later)."""
        return len(self.listeners) >= MAX_LISTENERS

    @contextlib.asynccontextmanager
    async def listen(self) -> AsyncIterator[Listener]:
        listener = Listener()
        if self._last is None:
            self._last = await asyncio.to_thread(self.store.last_event_id)
        self.listeners.add(listener)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll())
        try:
            yield listener
        finally:
            self.listeners.discard(listener)

    async def _poll(self) -> None:
        while self.listeners:
            await asyncio.sleep(self.interval)
            try:
                await self.poll_once()
            except Exception as exc:  # the store busy or failing: tell nobody, try again next time
                log.warning("dashboard feed: %s", exc)

    async def poll_once(self) -> set[str]:
        """Read the events after the last seen one; tell every listener which MACs they touched."""
        last = self._last or 0
        events = await asyncio.to_thread(self.store.events_after, last, BATCH)
        if not events:
            return set()
        self._last = events[-1].id
        macs = {e.mac for e in events}
        for listener in list(self.listeners):
            listener.tell(macs)
        return macs

    async def close(self) -> None:
        """End every stream (the server stops)."""
        for listener in list(self.listeners):
            listener.closed = True
            listener.woken.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One Server-Sent Event: the JSON is one line (json.dumps escapes every newline)."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def comment(text: str) -> bytes:
    return f": {text}\n\n".encode()
