"""Password hashes of the dashboard's users: scrypt (hashlib, RFC 7914), never the password itself.

A hash is one text field, ``scrypt$N$r$p$SALT$KEY`` (salt and key in unpadded URL-safe base64), so the cost
can be raised later and old hashes still check (``needs_rehash`` says which to renew at the next login).
Checking takes ~0.1 s and 32 MiB on purpose; a hash that is not one of ours never checks (no exception).

Rules for a new password (``password_problem``): at least 10 characters, not all the same character, not
the user's name; a passphrase is welcome (up to 1024 characters).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SCHEME = "scrypt"
N, R, P = 2**15, 8, 1  # 32 MiB, ~0.1 s here: OWASP's scrypt minimum is N=2^17 with r=8 p=1 at 128 MiB;
# the server answers logins of one workshop, so memory per check is kept at 32 MiB with a ~0.1 s cost
KEY_BYTES = 32
SALT_BYTES = 16
MIN_LENGTH = 10
MAX_LENGTH = 1024
MAX_N = 2**20  # a stored hash asking more than this is refused (a forged hash must not eat the server's RAM)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8", "surrogatepass"), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r + (1 << 20),
        dklen=KEY_BYTES,
    )  # fmt: skip


def hash_password(password: str) -> str:
    """A new hash of ``password`` with a fresh salt."""
    salt = secrets.token_bytes(SALT_BYTES)
    return f"{SCHEME}${N}${R}${P}${_b64(salt)}${_b64(_derive(password, salt, N, R, P))}"


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes] | None:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        return None
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, key = _unb64(parts[4]), _unb64(parts[5])
    except ValueError:
        return None
    if not (2 <= n <= MAX_N and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16 and salt and len(key) == KEY_BYTES):
        return None
    return n, r, p, salt, key


def check_password(password: str, stored: str) -> bool:
    """Whether ``password`` is the one ``stored`` was made from (constant time in the key comparison)."""
    parsed = _parse(stored)
    if parsed is None or len(password) > MAX_LENGTH:
        return False
    n, r, p, salt, key = parsed
    return hmac.compare_digest(_derive(password, salt, n, r, p), key)


def needs_rehash(stored: str) -> bool:
    """The hash was made with other parameters than today's."""
    parsed = _parse(stored)
    return parsed is None or parsed[:3] != (N, R, P)


def password_problem(password: str, user: str) -> str | None:
    """Why ``password`` is not accepted for ``user`` (None: it is)."""
    if len(password) < MIN_LENGTH:
        return f"the password must have at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"the password may have at most {MAX_LENGTH} characters"
    if len(set(password)) == 1:
        return "the password may not repeat one character"
    if password.casefold() == user.casefold():
        return "the password may not be the user's name"
    return None
