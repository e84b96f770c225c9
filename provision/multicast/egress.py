"""What else the server sends on the imaging interface, so a carousel can make room for it (``Egress``).

The carousel is paced to 90 % of the link; everything else the server sends on that link (HTTP chunks of the
agents that left the carousel or never joined it, repairs, TFTP, hooks over SSH) must fit in the rest. When it
does not, the link's queue overflows and drops datagrams for every listener alike: they repair by HTTP, which
sends more, until they leave for HTTP altogether (measured on the rack bench: one agent on a link a tenth as
fast left the carousel and fetched 68 MB by HTTP at its link's pace; with the server's link already 93 % full
on the wire, the three others lost 3 % of their datagrams near the end of the pass and took 1.4 to 1.5 times
as long). So the sender yields: it paces to its rate less what the interface sent besides its own datagrams
over the last ``window`` seconds (1 s), never below ``floor`` of its rate (half).

The interface's bytes come from ``/sys/class/net/DEV/statistics/tx_bytes`` (the kernel's count, Ethernet
headers included); the carousel's own are its datagrams plus their IPv4, UDP and Ethernet headers. A server
with no interface configured (or a counter it cannot read) does not yield, and says so once.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

HEADERS = 20 + 8 + 14  # IPv4 + UDP + Ethernet bytes the kernel counts for each datagram
WINDOW = 1.0  # seconds over which the other traffic is measured
FLOOR = 0.5  # the carousel never yields below this share of its rate
NOISE = 0.01  # other traffic below this share of the rate is not yielded for (ARP, keepalives). The carousel's
# own bytes are counted when handed to the kernel but by the interface when sent, so a queue in between reads as
# "other" traffic for a moment: a few % of the rate now and then, a yield that costs as much. A 5 % threshold
# (and a 2 s window) hid most of a slow agent's HTTP and the others took 1.41 x as long instead of 1.07 x.
SYS_NET = Path("/sys/class/net")


def tx_counter(device: str, root: Path = SYS_NET) -> Callable[[], int] | None:
    """A reader of ``device``'s transmitted bytes, or None when there is no such counter."""
    path = root / device / "statistics" / "tx_bytes"
    try:
        int(path.read_text())
    except (OSError, ValueError) as exc:
        log.info("carousel: no byte counter for %s (%s): it will not make room for other traffic", device, exc)
        return None
    return lambda: int(path.read_text())


class Egress:
    """``pace(own)``: the rate to send at now, given the bytes the carousel handed to the kernel so far (its
    datagrams' lengths; ``own_datagrams`` of them): the configured ``rate`` less the interface's other traffic
    over the last ``window`` seconds, not below ``floor`` of it. ``clock`` and ``read`` are injectable."""

    def __init__(
        self, rate: int, read: Callable[[], int], *, window: float = WINDOW, floor: float = FLOOR,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.rate, self.read, self.window, self.floor, self.clock = rate, read, window, floor, clock
        self.samples: deque[tuple[float, int, int]] = deque()  # (time, interface bytes, own bytes on the wire)
        self.other = 0.0  # bytes/s the interface sent besides the carousel, over the window
        self.paced = rate

    def reset(self) -> None:
        """Forget the samples (the carousel resumes after a pause: what the link sent meanwhile is no guide to
        now, and a sample from before it would spread the pause's traffic over the next second)."""
        self.samples.clear()
        self.other, self.paced = 0.0, self.rate

    def pace(self, own_bytes: int, own_datagrams: int) -> int:
        now = self.clock()
        try:
            sent = self.read()
        except (OSError, ValueError):
            return self.rate
        self.samples.append((now, sent, own_bytes + HEADERS * own_datagrams))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window:
            self.samples.popleft()
        then, sent0, own0 = self.samples[0]
        if now - then <= 0:
            return self.paced
        self.other = max(0.0, ((sent - sent0) - (self.samples[-1][2] - own0)) / (now - then))
        other = self.other if self.other >= NOISE * self.rate else 0.0
        self.paced = max(int(self.rate * self.floor), int(self.rate - other))
        return self.paced
