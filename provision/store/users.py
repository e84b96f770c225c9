"""The dashboard's users and their sessions (``UserRecords``, part of ``Store``).

- A user is a name and a scrypt hash (provision.passwords); ``provision users add|passwd|remove`` manage them.
  A new password or a removed user ends every session of that user.
- A session is made at login: the cookie holds a random token, the store only its sha256 (a copy of the
  database opens no session); each session has its own CSRF token, which every form of the dashboard sends
  back. A session ends at logout, after ``idle`` seconds without a request, or ``lifetime`` seconds after
  login, whichever comes first.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass

from provision.errors import FatalError
from provision.passwords import check_password, hash_password, needs_rehash
from provision.store.base import Database

USER_NAME = re.compile(r"[a-z][a-z0-9._-]{0,31}")
SESSION_BYTES = 32


class UserError(FatalError):
    """A user cannot be added, changed or removed: a bad name, an existing or unknown user."""


@dataclass(frozen=True)
class User:
    name: str
    created: float
    changed: float


@dataclass(frozen=True)
class Session:
    """A logged-in browser: who, its CSRF token, and when it ends."""

    user: str
    csrf: str
    created: float
    expires: float


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class UserRecords(Database):
    # -------------------------------------------------------------------------------------------- users
    def users(self) -> list[User]:
        with self._read():
            rows = self._db.execute("SELECT name, created, changed FROM users ORDER BY name").fetchall()
        return [User(r["name"], r["created"], r["changed"]) for r in rows]

    def add_user(self, name: str, password: str) -> User:
        if not USER_NAME.fullmatch(name):
            raise UserError(f"{name[:40]!r} is not a user name: a-z first, then a-z, 0-9, '.', '_', '-' (32 at most)")
        stored, now = hash_password(password), time.time()
        with self._tx() as db:
            if db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise UserError(f"user {name} exists (provision users passwd {name} changes the password)")
            db.execute("INSERT INTO users (name, password, created, changed) VALUES (?, ?, ?, ?)",
                       (name, stored, now, now))  # fmt: skip
            self._event(db, "", "user", {"action": "added", "user": name})
        return User(name, now, now)

    def set_password(self, name: str, password: str) -> None:
        """A new password; every session of the user ends."""
        stored = hash_password(password)
        with self._tx() as db:
            if not db.execute("UPDATE users SET password = ?, changed = ? WHERE name = ?",
                              (stored, time.time(), name)).rowcount:  # fmt: skip
                raise UserError(f"no user {name[:40]!r} (provision users list)")
            db.execute("DELETE FROM sessions WHERE user = ?", (name,))
            self._event(db, "", "user", {"action": "password changed", "user": name})

    def remove_user(self, name: str) -> None:
        """The user and all its sessions; what it did stays in the events."""
        with self._tx() as db:
            db.execute("DELETE FROM sessions WHERE user = ?", (name,))
            if not db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount:
                raise UserError(f"no user {name[:40]!r} (provision users list)")
            self._event(db, "", "user", {"action": "removed", "user": name})

    def authenticate(self, name: str, password: str) -> bool:
        """Whether ``password`` is ``name``'s (a hash made with older parameters is renewed)."""
        with self._read():
            row = self._db.execute("SELECT password FROM users WHERE name = ?", (name,)).fetchone()
        if row is None:
            check_password(password, hash_password("no such user"))  # the same time as a wrong password
            return False
        if not check_password(password, row["password"]):
            return False
        if needs_rehash(row["password"]):
            with self._tx() as db:
                db.execute("UPDATE users SET password = ? WHERE name = ?", (hash_password(password), name))
        return True

    # ----------------------------------------------------------------------------------------- sessions
    def open_session(self, user: str, *, lifetime: float, remote: str | None = None) -> tuple[str, Session]:
        """A new session of ``user``: the cookie's token (kept nowhere but in the browser) and the session."""
        token, csrf, now = secrets.token_urlsafe(SESSION_BYTES), secrets.token_urlsafe(SESSION_BYTES), time.time()
        with self._tx() as db:
            db.execute("DELETE FROM sessions WHERE expires < ?", (now,))
            db.execute(
                "INSERT INTO sessions (id_hash, user, csrf, created, seen, expires, remote) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (_token_hash(token), user, csrf, now, now, now + lifetime, remote),
            )
            self._event(db, "", "login", {"user": user, "remote": remote})
        return token, Session(user, csrf, now, now + lifetime)

    def session(self, token: str, *, idle: float) -> Session | None:
        """The live session of a cookie's token (its last use now), or None: unknown, expired, idle too long,
        or its user removed."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT * FROM sessions WHERE id_hash = ?", (_token_hash(token),)).fetchone()
            if row is None:
                return None
            if row["expires"] < now or row["seen"] + idle < now:
                db.execute("DELETE FROM sessions WHERE id_hash = ?", (row["id_hash"],))
                return None
            db.execute("UPDATE sessions SET seen = ? WHERE id_hash = ?", (now, row["id_hash"]))
        return Session(row["user"], row["csrf"], row["created"], row["expires"])

    def close_session(self, token: str) -> None:
        with self._tx() as db:
            row = db.execute("SELECT user FROM sessions WHERE id_hash = ?", (_token_hash(token),)).fetchone()
            if row is not None:
                db.execute("DELETE FROM sessions WHERE id_hash = ?", (_token_hash(token),))
                self._event(db, "", "logout", {"user": row["user"]})
