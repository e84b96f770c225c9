"""The server's records (``Store``): machines and per-boot tokens here; runs, verification records and hook
results in ``runrecords``; erasure records and lots in ``erasures``; capture requests and
what capture runs offered and uploaded in ``captures``; users in ``users``; the figures of /metrics
in ``stats``; the database, its transactions and the event log in ``base``.
"""

from __future__ import annotations

import logging
import secrets
import time

from provision.errors import ActionRefused, NotFound
from provision.states import MachineState
from provision.store.base import BUSY_TIMEOUT, StoreUnavailable, unavailable
from provision.store.captures import CaptureRecords
from provision.store.erasures import ErasureRecords
from provision.store.records import BootToken, Machine, machine_from_row, token_from_row
from provision.store.runrecords import RunRecords
from provision.store.stats import StatsRecords
from provision.store.users import UserRecords

log = logging.getLogger(__name__)

__all__ = ["BUSY_TIMEOUT", "Store", "StoreUnavailable", "unavailable"]
ACTIONS = ("reimage", "ready", "forget")
ACTION_WORDS = {"reimage": "imaging it again", "ready": "marking it ready", "forget": "forgetting it"}


class Store(UserRecords, ErasureRecords, CaptureRecords, RunRecords, StatsRecords):
    """All the server's records in one SQLite file. Safe to share between threads."""

    # -------------------------------------------------------------------------------------- machines
    def machine(self, mac: str) -> Machine | None:
        with self._read():
            row = self._db.execute("SELECT * FROM machines WHERE mac = ?", (mac,)).fetchone()
        return machine_from_row(row) if row else None

    def machines(self) -> list[Machine]:
        with self._read():
            rows = self._db.execute("SELECT * FROM machines ORDER BY first_seen, mac").fetchall()
        return [machine_from_row(r) for r in rows]

    def seen(self, mac: str, initial: MachineState = MachineState.NEW) -> Machine:
        """Record that a machine showed up; create it in `initial` state if new."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO machines (mac, state, first_seen, last_seen) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(mac) DO UPDATE SET last_seen = excluded.last_seen, forgotten_at = NULL",
                (mac, initial.value, now, now),
            )
        found = self.machine(mac)
        assert found is not None
        return found

    def set_state(self, mac: str, state: MachineState, reason: str | None = None, **fields: str | None) -> None:
        allowed = {"vendor", "product", "serial", "recipe"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"unknown machine fields {sorted(unknown)}")
        sets = ", ".join([*(f"{k} = ?" for k in fields), "state = ?", "reason = ?"])
        with self._tx() as db:
            db.execute(
                f"UPDATE machines SET {sets} WHERE mac = ?",  # nosec B608  # noqa: S608 - columns from a fixed set
                (*fields.values(), state.value, reason, mac),
            )
            self._event(db, mac, "state", {"state": state.value, "reason": reason})

    # ----------------------------------------------------------------------------- operators' actions
    def operator_action(self, mac: str, action: str, user: str) -> Machine:
        """An action of a logged-in user on a machine, checked against its state in one transaction, and
        kept as an ``action`` event with the user's name:

        - ``reimage``: imaged again at its next network boot (state ``new``; not while it is being imaged);
        - ``ready``: a machine set aside (``repair``) or ``failed`` is repaired: imaged at its next boot;
        - ``forget``: off the dashboard and back to ``new`` (its runs and records stay; seen again, it shows).

        ActionRefused (409) when the state does not allow it, NotFound (404) for an unknown machine."""
        allowed: dict[str, set[MachineState]] = {
            "reimage": {s for s in MachineState if s is not MachineState.IMAGING},
            "ready": {MachineState.REPAIR, MachineState.FAILED},
            "forget": {s for s in MachineState if s is not MachineState.IMAGING},
        }
        if action not in allowed:
            raise ValueError(f"unknown action {action!r}")
        with self._tx() as db:
            row = db.execute("SELECT * FROM machines WHERE mac = ?", (mac,)).fetchone()
            if row is None:
                raise NotFound(f"no machine {mac}", mac=mac)
            state = MachineState(row["state"])
            if state not in allowed[action]:
                raise ActionRefused(f"{mac} is {state.value}: {ACTION_WORDS[action]} is not possible now", mac=mac,
                                    state=state.value, action=action)  # fmt: skip
            forgotten = time.time() if action == "forget" else None
            db.execute("UPDATE machines SET state = ?, reason = NULL, forgotten_at = ? WHERE mac = ?",
                       (MachineState.NEW.value, forgotten, mac))  # fmt: skip
            db.execute("UPDATE boot_tokens SET expires_at = MIN(expires_at, ?) WHERE mac = ?", (time.time(), mac))
            self._event(db, mac, "action", {"action": action, "user": user, "state_before": state.value})
        found = self.machine(mac)
        assert found is not None
        return found

    # ---------------------------------------------------------------------------------------- tokens
    def issue_token(self, mac: str, via: str, ttl: float, remote: str | None = None) -> str:
        """A fresh per-boot token for the machine (the boot script puts it on the kernel command line), bound
        to ``remote``, the address that fetched the boot script."""
        token = secrets.token_hex(16)
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO machines (mac, state, first_seen, last_seen) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(mac) DO UPDATE SET last_seen = excluded.last_seen, forgotten_at = NULL",
                (mac, MachineState.NEW.value, now, now),
            )
            db.execute("UPDATE machines SET boots = boots + 1 WHERE mac = ?", (mac,))
            db.execute(
                "INSERT INTO boot_tokens (token, mac, issued_at, expires_at, via, remote) VALUES (?, ?, ?, ?, ?, ?)",
                (token, mac, now, now + ttl, via, remote),
            )
            self._event(db, mac, "boot", {"via": via})
        return token

    def local_boot(self, mac: str, via: str, action: str = "local") -> None:
        """A known machine network-booted and was told to boot its local disk (``action`` "local") or to power
        off (an erased PC: "off"): counted, seen, an event."""
        with self._tx() as db:
            found = db.execute(
                "UPDATE machines SET boots = boots + 1, last_seen = ? WHERE mac = ?", (time.time(), mac)
            ).rowcount
            if found:
                self._event(db, mac, "boot", {"via": via, "action": action})

    def current_token(self, mac: str, token: str) -> BootToken | None:
        """The token record when ``token`` was issued to ``mac``, is the newest one for it and has not expired."""
        with self._read():
            row = self._db.execute(
                "SELECT * FROM boot_tokens WHERE mac = ? ORDER BY issued_at DESC, rowid DESC LIMIT 1", (mac,)
            ).fetchone()
        if row is None or row["expires_at"] < time.time():
            return None
        return token_from_row(row) if secrets.compare_digest(str(row["token"]), token) else None

    def newest_token_expiry(self, mac: str) -> float | None:
        """When the MAC's newest boot token expires (each accepted progress of its run moves it: ``extend_token``);
        None when it has none."""
        with self._read():
            row = self._db.execute(
                "SELECT expires_at FROM boot_tokens WHERE mac = ? ORDER BY issued_at DESC, rowid DESC LIMIT 1", (mac,)
            ).fetchone()
        return None if row is None else float(row["expires_at"])

    def check_token(self, mac: str, token: str) -> bool:
        """True when `token` was issued to `mac`, is the newest one for it, and has not expired."""
        return self.current_token(mac, token) is not None

    def extend_token(self, mac: str, token: str, ttl: float) -> float | None:
        """Keep ``token``, the MAC's newest unexpired one, valid ``ttl`` seconds from now (never shortened): a
        run's accepted progress does it, so an erasure or a write that lasts longer than the token's first
        lifetime can still report. Returns the new expiry; None (nothing changed) for any other token."""
        now = time.time()
        with self._tx() as db:
            row = db.execute(
                "SELECT token, expires_at FROM boot_tokens WHERE mac = ? ORDER BY issued_at DESC, rowid DESC LIMIT 1",
                (mac,),
            ).fetchone()
            if row is None or row["expires_at"] < now or not secrets.compare_digest(str(row["token"]), token):
                return None
            until = max(float(row["expires_at"]), now + ttl)
            db.execute("UPDATE boot_tokens SET expires_at = ? WHERE token = ?", (until, token))
        return until

    def mark_token_used(self, token: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE boot_tokens SET used_at = ? WHERE token = ? AND used_at IS NULL", (time.time(), token))
