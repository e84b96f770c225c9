"""Address leases of full-DHCP mode: a range, bindings sticky per MAC, persisted atomically as JSON.

- A MAC keeps its address across leases, releases and server restarts while nobody else needed it: a
  new client first gets an address never bound, then the one whose binding expired longest ago.
- An offered address is held for a few seconds (`OFFER_HOLD`) so two clients are not offered the same one;
  in a burst of DISCOVERs that finds the pool short, the oldest unconfirmed offers are offered again and the
  first REQUEST wins (`provision.dhcp.holds.Offers`): a flood of made-up MACs cannot hold the pool.
- A declined address (the client found it in use, RFC 2131 DECLINE) is not offered for `DECLINE_HOLD`
  seconds (at most one lease time), and at most a quarter of the pool at once (`holds.Quarantine`).
  `may_decline` says whether a DECLINE can come from that client at all: its offer, or its fresh lease.
- The file is rewritten whole (temporary file, fsync, os.replace) on every change, or at most every
  `SAVE_INTERVAL` in write-behind mode (the server's): a crash leaves the old or the new file, never half.
  It is read at start; an unreadable file stops the server with the
  path, because guessing would hand out addresses that are in use. Offers are not persisted.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from provision.dhcp.holds import DECLINE_HOLD, DECLINE_SHARE, OFFER_HOLD, OFFER_RECORDS, Offers, Quarantine
from provision.dhcp.policy import DhcpSettingsError
from provision.errors import FatalError

__all__ = [
    "DECLINE_HOLD",
    "DECLINE_WINDOW",
    "MAX_POOL",
    "OFFER_HOLD",
    "SAVE_INTERVAL",
    "Lease",
    "LeasePool",
    "LeaseStoreError",
    "LeaseTable",
]

log = logging.getLogger(__name__)

DECLINE_WINDOW = 60.0  # seconds after its ACK a client may still DECLINE (it probes the address right away)
MAX_POOL = 65536
FILE_VERSION = 1
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


class LeaseStoreError(FatalError):
    """The lease file cannot be read back; carries its path."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason} (move the file away to start with no leases)", path=str(path))
        self.path = path


@dataclass(frozen=True)
class LeasePool:
    """The address range of full-DHCP mode and what every lease says about the network."""

    start: IPv4Address
    end: IPv4Address
    netmask: IPv4Address
    router: IPv4Address | None = None
    dns: tuple[IPv4Address, ...] = ()
    lease_time: int = 3600  # seconds

    def __post_init__(self) -> None:
        object.__setattr__(self, "dns", tuple(self.dns))
        try:
            network = IPv4Network(f"{self.start}/{self.netmask}", strict=False)
        except ValueError as exc:
            raise DhcpSettingsError("netmask", f"{self.netmask}: {exc}") from None
        if int(self.end) < int(self.start):
            raise DhcpSettingsError("range", f"end {self.end} is below start {self.start}")
        if self.end not in network:
            raise DhcpSettingsError("range", f"{self.start}..{self.end} is not inside one {network}")
        if int(self.end) - int(self.start) + 1 > MAX_POOL:
            raise DhcpSettingsError("range", f"more than {MAX_POOL} addresses")
        if not 10 <= self.lease_time <= 0xFFFFFFFE:
            raise DhcpSettingsError("lease_time", f"{self.lease_time} s is not 10 s .. 136 years")

    @property
    def network(self) -> IPv4Network:
        return IPv4Network(f"{self.start}/{self.netmask}", strict=False)

    def __contains__(self, ip: object) -> bool:
        return isinstance(ip, IPv4Address) and self.start <= ip <= self.end

    def addresses(self) -> Iterator[IPv4Address]:
        for value in range(int(self.start), int(self.end) + 1):
            yield IPv4Address(value)


@dataclass(frozen=True)
class Lease:
    mac: str
    ip: IPv4Address
    expires: float  # wall clock, seconds since the epoch

    def active(self, now: float) -> bool:
        return self.expires > now


SAVE_INTERVAL = 0.5  # seconds, write-behind mode


class LeaseTable:
    """Bindings MAC -> address for one pool, with the offers and quarantines that hold addresses. Thread-safe.

    By default every change is saved before it is answered. With `write_behind` (the server's choice) a
    change marks the table dirty and `flush()` saves it at most every `SAVE_INTERVAL` seconds and at stop:
    a burst of 150 PXE clients otherwise spends most of the DHCP thread in fsync and the socket overflows
    (bench/boot_burst.py). A crash loses at most that interval of leases; a client that renews then simply
    gets its sticky address again if it is still free.

    `offer_hold` is how long an unconfirmed offer keeps its address; `decline_hold` how long a declined
    address is kept out of offers (never more than one lease time).
    """

    def __init__(
        self,
        pool: LeasePool,
        path: Path | None = None,
        *,
        reserved: Iterable[IPv4Address] = (),
        clock: Callable[[], float] = time.time,
        write_behind: bool = False,
        offer_hold: float = OFFER_HOLD,
        decline_hold: float = DECLINE_HOLD,
    ) -> None:
        self.pool = pool
        self.path = path
        self.write_behind = write_behind
        self._dirty = False
        self._saved_at = 0.0
        self._reserved = frozenset(reserved)
        self._clock = clock
        self._lock = threading.RLock()
        self._by_mac: dict[str, Lease] = {}
        self._by_ip: dict[IPv4Address, str] = {}
        self._committed: dict[str, float] = {}  # MAC -> when its lease was last ACKed (in memory only)
        size = int(pool.end) - int(pool.start) + 1
        self._offers = Offers(offer_hold, size + OFFER_RECORDS)
        self._declined = Quarantine(min(decline_hold, pool.lease_time), size // DECLINE_SHARE)
        self._burst_noted = float("-inf")
        if path is not None and path.exists():
            self._load(path)

    # ----------------------------------------------------------------------------------- queries
    def get(self, mac: str) -> Lease | None:
        with self._lock:
            return self._by_mac.get(mac)

    def leases(self) -> list[Lease]:
        with self._lock:
            return sorted(self._by_mac.values(), key=lambda lease: int(lease.ip))

    def _obtainable(self, ip: IPv4Address, mac: str, now: float) -> bool:
        """In the range, not reserved or declined, not another MAC's active lease (offers aside)."""
        if ip not in self.pool or ip in self._reserved or self._declined.blocked(ip, now):
            return False
        holder = self._by_ip.get(ip)
        return holder is None or holder == mac or not self._by_mac[holder].active(now)

    def _free_for(self, ip: IPv4Address, mac: str, now: float) -> bool:
        return self._obtainable(ip, mac, now) and self._offers.holder(ip, now) in (None, mac)

    def available(self, ip: IPv4Address, mac: str) -> bool:
        """Could `mac` have `ip` now? (in the range, not reserved or declined, not held by another MAC's
        active lease or pending offer)"""
        with self._lock:
            return self._free_for(ip, mac, self._clock())

    def may_decline(self, mac: str, ip: IPv4Address) -> bool:
        """Can a DECLINE of `ip` come from `mac`? Only if `ip` was offered to it (its live offer) or leased to
        it in the last `DECLINE_WINDOW` seconds: a client probes its address right after the ACK."""
        with self._lock:
            now = self._clock()
            offer = self._offers.of(mac, now)
            if offer is not None and offer.ip == ip:
                return True
            lease = self._by_mac.get(mac)
            acked = self._committed.get(mac)
            return lease is not None and lease.ip == ip and acked is not None and now - acked < DECLINE_WINDOW

    # ---------------------------------------------------------------------------------- changes
    def offer(self, mac: str, requested: IPv4Address | None = None) -> IPv4Address | None:
        """Choose an address for `mac` and hold it; None when the range is exhausted."""
        with self._lock:
            now = self._clock()
            ip = self._choose(mac, requested, now)
            if ip is not None:
                self._offers.add(mac, ip, now)
            return ip

    def _choose(self, mac: str, requested: IPv4Address | None, now: float) -> IPv4Address | None:
        binding = self._by_mac.get(mac)
        own = (binding.ip if binding else None, self._offers.last(mac))
        for candidate in (*own, requested):
            if candidate is not None and self._free_for(candidate, mac, now):
                return candidate
        if self._offers.bursting(now):  # a flood: no scan of the pool per DISCOVER, offers are reused
            self._offers.short(now)
            return self._reuse(mac, own, now) or self._scan(mac, now)
        found = self._scan(mac, now)
        if found is None and self._offers.short(now):
            return self._reuse(mac, own, now)
        return found

    def _scan(self, mac: str, now: float) -> IPv4Address | None:
        for ip in self.pool.addresses():  # never bound first, so other MACs keep their sticky addresses
            if ip not in self._by_ip and self._free_for(ip, mac, now):
                return ip
        expired = sorted((b for b in self._by_mac.values() if not b.active(now)), key=lambda b: b.expires)
        for lease in expired:
            if self._free_for(lease.ip, mac, now):
                return lease.ip
        return None

    def _reuse(self, mac: str, own: tuple[IPv4Address | None, ...], now: float) -> IPv4Address | None:
        """In a burst that finds the pool short, offers are not exclusive: the MAC's own address first, then
        the oldest unconfirmed offer's; the first REQUEST gets it (`commit`)."""
        if now - self._burst_noted > self._offers.hold:
            self._burst_noted = now
            log.warning(
                "%s: pool %s..%s short in a burst of DISCOVERs (%d unconfirmed offers): reusing the oldest offers",
                mac,
                self.pool.start,
                self.pool.end,
                len(self._offers),
            )
        for candidate in own:
            if candidate is not None and self._obtainable(candidate, mac, now):
                return candidate
        return self._offers.oldest(now, lambda ip: self._obtainable(ip, mac, now))

    def forget_offer(self, mac: str) -> None:
        with self._lock:
            self._offers.drop(mac)

    def commit(self, mac: str, ip: IPv4Address, *, selecting: bool = False) -> Lease | None:
        """Bind `ip` to `mac` for one lease time (a REQUEST being ACKed); None when it cannot be had.

        `selecting`: the REQUEST names this server, i.e. answers an offer. Then an address under another MAC's
        unconfirmed offer is still `mac`'s to take (in a burst, the offer made to `mac` was made again to
        others): the first REQUEST wins, the others get a NAK and start over."""
        with self._lock:
            now = self._clock()
            offer = self._offers.of(mac, now)
            claimed = (selecting or (offer is not None and offer.ip == ip)) and self._obtainable(ip, mac, now)
            if not (claimed or self._free_for(ip, mac, now)):
                return None
            self._unbind(mac)
            previous = self._by_ip.get(ip)
            if previous is not None:  # an expired binding of another MAC: that MAC loses its sticky address
                self._unbind(previous)
            lease = Lease(mac, ip, now + self.pool.lease_time)
            self._by_mac[mac] = lease
            self._by_ip[ip] = mac
            self._committed[mac] = now
            self._offers.drop(mac)
            self._save()
            return lease

    def release(self, mac: str, ip: IPv4Address) -> bool:
        """The client gives `ip` back (RELEASE): the binding stays, expired now, so the MAC gets it again."""
        with self._lock:
            lease = self._by_mac.get(mac)
            if lease is None or lease.ip != ip:
                return False
            self._by_mac[mac] = Lease(mac, ip, min(lease.expires, self._clock()))
            self._save()
            return True

    def decline(self, mac: str, ip: IPv4Address) -> bool:
        """`ip` is in use by another host (DECLINE): nobody gets it for the decline hold (`may_decline`
        says whether to believe the client)."""
        with self._lock:
            if ip not in self.pool:
                return False
            self._declined.add(ip, self._clock())
            lease = self._by_mac.get(mac)
            if lease is not None and lease.ip == ip:
                self._unbind(mac)
            self._offers.drop(mac)
            self._save()
            return True

    @property
    def decline_hold(self) -> float:
        return self._declined.hold

    def _unbind(self, mac: str) -> None:
        self._committed.pop(mac, None)
        lease = self._by_mac.pop(mac, None)
        if lease is not None and self._by_ip.get(lease.ip) == mac:
            del self._by_ip[lease.ip]

    # ------------------------------------------------------------------------------- persistence
    def _document(self) -> dict[str, Any]:
        now = self._clock()
        return {
            "version": FILE_VERSION,
            "leases": [{"mac": lease.mac, "ip": str(lease.ip), "expires": lease.expires} for lease in self.leases()],
            "declined": [{"ip": str(ip), "until": until} for ip, until in self._declined.items(now)],
        }

    @property
    def dirty(self) -> bool:
        return self._dirty

    def flush(self, *, force: bool = False) -> None:
        """Save pending changes (write-behind mode): now if `force`, else once SAVE_INTERVAL has passed."""
        with self._lock:
            if self._dirty and (force or time.monotonic() - self._saved_at >= SAVE_INTERVAL):
                self._write()

    def _save(self) -> None:
        if self.write_behind:
            self._dirty = True
            return
        self._write()

    def _write(self) -> None:
        self._dirty = False
        self._saved_at = time.monotonic()
        if self.path is None:
            return
        text = json.dumps(self._document(), indent=1) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    out.write(text)
                    out.flush()
                    os.fsync(out.fileno())
                Path(tmp).replace(self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            # Serving addresses matters more than remembering them: keep going from memory, loudly.
            log.error("dhcp: cannot save leases to %s: %s; leases are kept in memory only", self.path, exc)

    def _load(self, path: Path) -> None:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LeaseStoreError(path, f"cannot read the lease file: {exc}") from None
        if not isinstance(doc, dict) or doc.get("version") != FILE_VERSION:
            raise LeaseStoreError(path, f"not a version {FILE_VERSION} lease file")
        try:
            for item in doc.get("leases", []):
                mac, ip, expires = str(item["mac"]).lower(), IPv4Address(item["ip"]), float(item["expires"])
                if not _MAC.match(mac):
                    raise ValueError(f"bad MAC {mac[:40]!r}")
                if ip not in self.pool:
                    log.info(
                        "%s: lease of %s dropped: outside the range %s..%s", mac, ip, self.pool.start, self.pool.end
                    )
                    continue
                if ip in self._by_ip or mac in self._by_mac:
                    log.warning("%s: duplicate lease of %s in %s dropped", mac, ip, path)
                    continue
                self._by_mac[mac] = Lease(mac, ip, expires)
                self._by_ip[ip] = mac
            declined = [(float(item["until"]), IPv4Address(item["ip"])) for item in doc.get("declined", [])]
        except (KeyError, TypeError, ValueError) as exc:
            raise LeaseStoreError(path, f"bad lease entry: {exc!r}") from None
        # An older server kept declines for a lease time and from anyone: at most one hold from now, the newest.
        now = self._clock()
        for until, ip in sorted(declined):
            if ip in self.pool:
                self._declined.add(ip, now, until)
        log.info("dhcp: %d leases loaded from %s", len(self._by_mac), path)
