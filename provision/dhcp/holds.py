"""Short holds on addresses in full-DHCP mode: unconfirmed offers and declined addresses (docs/dhcp.md).

Neither may let a stranger take the pool away for long (issue 12, defect 7):

- `Offers`: an offer holds its address for a few seconds (`OFFER_HOLD`) so two clients are not offered the
  same one. In a burst of DISCOVERs that finds the pool short (`BURST` shortages within one hold: a flood
  of made-up MACs, or more PCs than addresses), offers stop being exclusive: the address of the oldest
  unconfirmed offer is offered again, and whichever client REQUESTs it first gets it (a superseded offer
  can still be claimed; the other client gets a NAK and starts over). A MAC that never REQUESTs thus holds
  nothing for long, and a real PC that DISCOVERs during a flood still gets an address.
- `Quarantine`: a declined address is not offered for `DECLINE_HOLD` seconds (RFC 2131 leaves the time to
  the server; dnsmasq waits 10 minutes), never longer than a lease, and at most a quarter of the pool is in
  quarantine at once: beyond that, the oldest quarantine is lifted. Which DECLINEs count at all (only from
  the MAC the address was offered or just leased to) is decided by the lease table and the answers.

Both are plain bookkeeping under the lease table's lock; times are the table's clock (seconds).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address

log = logging.getLogger("provision.dhcp.leases")

OFFER_HOLD = 10.0  # seconds an unconfirmed offer keeps its address for its MAC
OFFER_RECORDS = 1024  # offers remembered beyond the pool size (superseded ones included), oldest dropped
BURST = 4  # DISCOVERs finding the pool short within one offer hold: a burst, offers are reused
DECLINE_HOLD = 600.0  # seconds a declined address is kept out of offers (dnsmasq: 10 minutes)
DECLINE_SHARE = 4  # at most 1/DECLINE_SHARE of the pool is in quarantine at once


@dataclass(frozen=True)
class Offer:
    mac: str
    ip: IPv4Address
    until: float


class Offers:
    """Unconfirmed offers, oldest first: one per MAC, the newest per address holds it.

    `limit` bounds the records kept (a flood of made-up MACs leaves at most that many); expired records are
    dropped as new offers come in.
    """

    def __init__(self, hold: float = OFFER_HOLD, limit: int = OFFER_RECORDS) -> None:
        if hold <= 0:
            raise ValueError(f"offer hold must be positive, not {hold}")
        self.hold = hold
        self.limit = max(1, limit)
        self._by_mac: dict[str, Offer] = {}  # insertion order = age
        self._holders: dict[IPv4Address, str] = {}  # address -> MAC of its newest offer, oldest first
        self._shortages: deque[float] = deque(maxlen=BURST)

    def __len__(self) -> int:
        return len(self._by_mac)

    def of(self, mac: str, now: float) -> Offer | None:
        """`mac`'s live offer (superseded or not), else None."""
        offer = self._by_mac.get(mac)
        return offer if offer is not None and offer.until > now else None

    def last(self, mac: str) -> IPv4Address | None:
        """The address last offered to `mac`, live or not (its first choice when it asks again)."""
        offer = self._by_mac.get(mac)
        return offer.ip if offer is not None else None

    def holder(self, ip: IPv4Address, now: float) -> str | None:
        """The MAC whose live offer holds `ip`, else None."""
        mac = self._holders.get(ip)
        if mac is None:
            return None
        offer = self._by_mac.get(mac)
        return mac if offer is not None and offer.ip == ip and offer.until > now else None

    def add(self, mac: str, ip: IPv4Address, now: float) -> None:
        """`ip` is offered to `mac` now: it holds it (any other MAC's offer of it is superseded)."""
        self.drop(mac)
        self._by_mac[mac] = Offer(mac, ip, now + self.hold)
        self._holders.pop(ip, None)
        self._holders[ip] = mac  # the newest holder, at the end
        self._prune(now)

    def drop(self, mac: str) -> None:
        """Forget `mac`'s offer (confirmed, declined, or meant for another server)."""
        offer = self._by_mac.pop(mac, None)
        if offer is not None and self._holders.get(offer.ip) == mac:
            del self._holders[offer.ip]

    def _prune(self, now: float) -> None:
        while self._by_mac:
            first = next(iter(self._by_mac.values()))
            if first.until > now and len(self._by_mac) <= self.limit:
                return
            self.drop(first.mac)

    def short(self, now: float) -> bool:
        """Note that a DISCOVER found the pool short; True in a burst (`BURST` of them within one hold)."""
        self._shortages.append(now)
        return self.bursting(now)

    def bursting(self, now: float) -> bool:
        """Did `BURST` DISCOVERs find the pool short within the last hold?"""
        return len(self._shortages) == BURST and now - self._shortages[0] <= self.hold

    def oldest(self, now: float, usable: Callable[[IPv4Address], bool]) -> IPv4Address | None:
        """The address of the oldest live offer that `usable` accepts (to be offered again), else None."""
        stale = []
        found = None
        for ip, mac in self._holders.items():
            if self.holder(ip, now) != mac:
                stale.append(ip)
            elif usable(ip):
                found = ip
                break
        for ip in stale:
            del self._holders[ip]
        return found


class Quarantine:
    """Declined addresses and until when they are kept out of offers; at most `limit` at once."""

    def __init__(self, hold: float = DECLINE_HOLD, limit: int = 1) -> None:
        if hold < 0:
            raise ValueError(f"decline hold must not be negative, not {hold}")
        self.hold = hold
        self.limit = max(1, limit)
        self._until: dict[IPv4Address, float] = {}  # insertion order = age

    def blocked(self, ip: IPv4Address, now: float) -> bool:
        return self._until.get(ip, 0.0) > now

    def add(self, ip: IPv4Address, now: float, until: float | None = None) -> None:
        """Keep `ip` out of offers until `until` (at most one hold from now); lifts the oldest beyond `limit`."""
        for old in [old for old, end in self._until.items() if end <= now]:
            del self._until[old]
        self._until.pop(ip, None)
        end = now + self.hold if until is None else min(until, now + self.hold)
        if end <= now:
            return
        self._until[ip] = end
        while len(self._until) > self.limit:
            lifted = next(iter(self._until))
            del self._until[lifted]
            log.info("dhcp: quarantine of declined %s lifted early: at most %d addresses are held", lifted, self.limit)

    def items(self, now: float) -> list[tuple[IPv4Address, float]]:
        """The live quarantines, by address."""
        return sorted((ip, until) for ip, until in self._until.items() if until > now)
