"""The repository's signing key: an OpenPGP key the server owns, made on first use with gpg in a private home.

The key lives in ``<state>/secrets/repo-gnupg`` (mode 0700, never under the served repository): an ed25519
signing key without a passphrase (the nightly sync signs unattended; the folder's permissions protect it, as
they protect the server's SSH key beside it), without expiry. Its public half is exported beside the
repository's indexes (``provision.gpg``, binary, and ``provision.asc``, armored), where the bundle hook
fetches it. gpg never touches the machine's own keyrings: every call names the home folder, and the agent
it starts there is stopped after each use.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import tempfile
from pathlib import Path

from provision.bundles.errors import RepoError

log = logging.getLogger(__name__)

GPG_TIMEOUT = 120.0
MAX_HOME_CHARS = 80  # with "/S.gpg-agent.browser", within a socket path's 107 bytes
KEY_ALGORITHM = "ed25519"


def _run(argv: list[str], *, what: str, input_bytes: bytes | None = None) -> bytes:
    try:
        done = subprocess.run(argv, input=input_bytes, capture_output=True, timeout=GPG_TIMEOUT, check=False)
    except FileNotFoundError as exc:
        raise RepoError(f"{argv[0]} not found: {what} needs Debian's gnupg (gpg, gpgv)", tool=argv[0]) from exc
    except subprocess.TimeoutExpired as exc:
        raise RepoError(f"{what}: {argv[0]} timed out after {GPG_TIMEOUT:.0f} s", argv=argv) from exc
    if done.returncode != 0:
        stderr = done.stderr.decode("utf-8", "replace").strip()
        raise RepoError(
            f"{what}: {argv[0]} failed with exit code {done.returncode}: {stderr[-800:]}",
            argv=argv,
            returncode=done.returncode,
            stderr=stderr,
        )
    return done.stdout


class RepoKey:
    """The signing key in the private gpg home ``home``."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._alias: Path | None = None

    def _homedir(self) -> str:
        """The home as gpg is given it. gpg-agent's sockets live in the home, and a socket path is at most 107
        bytes: a long home (a test's, a site's deep state folder) is reached through a short link instead,
        ``/tmp/pvgpg-XXXXXX/h`` (removed by close)."""
        if len(str(self.home)) <= MAX_HOME_CHARS:
            return str(self.home)
        if self._alias is None:
            short = "/tmp" if Path("/tmp").is_dir() else None  # noqa: S108  # nosec B108 - mkdtemp: 0700, random
            alias = Path(tempfile.mkdtemp(prefix="pvgpg-", dir=short))
            (alias / "h").symlink_to(self.home.resolve())
            self._alias = alias
        return str(self._alias / "h")

    def _gpg(self, *args: str, what: str) -> bytes:
        base = ["gpg", "--homedir", self._homedir(), "--batch", "--no-tty", "--quiet", "--no-auto-key-locate"]
        return _run([*base, *args], what=what)

    def fingerprint(self) -> str | None:
        """The fingerprint of the signing key, or None when there is none yet."""
        if not (self.home / "pubring.kbx").is_file():
            return None
        out = self._gpg("--with-colons", "--list-secret-keys", what="listing the repository key").decode()
        lines = out.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("sec:"):
                fpr = next((x for x in lines[i + 1 :] if x.startswith("fpr:")), "")
                value = fpr.split(":")[9] if fpr.count(":") >= 9 else ""
                if value:
                    return value
        return None

    def ensure(self) -> tuple[str, bool]:
        """The key's fingerprint, and whether it was made now (on first use)."""
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.home.chmod(0o700)  # gpg warns about (and a thief reads) a home others may read
        found = self.fingerprint()
        if found is not None:
            return found, False
        uid = f"provision bundle repository ({socket.gethostname()[:60]})"
        self._gpg(
            "--pinentry-mode", "loopback", "--passphrase", "", "--quick-generate-key", uid, KEY_ALGORITHM, "sign",
            "never", what="making the repository key",
        )  # fmt: skip
        made = self.fingerprint()
        if made is None:
            raise RepoError(f"gpg made no secret key in {self.home}", path=str(self.home))
        log.info("made the repository signing key %s in %s", made, self.home)
        return made, True

    def export(self, fingerprint: str, *, armor: bool) -> bytes:
        return self._gpg(*(["--armor"] if armor else []), "--export", fingerprint, what="exporting the repository key")

    def sign(self, fingerprint: str, release: Path, inrelease: Path, detached: Path) -> None:
        """``InRelease`` (the Release clear-signed) and ``Release.gpg`` (a detached armored signature)."""
        common = ["--pinentry-mode", "loopback", "--passphrase", "", "--local-user", fingerprint, "--yes"]
        common += ["--digest-algo", "SHA512"]
        self._gpg(*common, "--clearsign", "--output", str(inrelease), str(release), what="signing InRelease")
        self._gpg(*common, "--armor", "--detach-sign", "--output", str(detached), str(release), what="signing Release")

    def close(self) -> None:
        """Stop the gpg agent gpg started in the home (nothing is left running after a sync); remove the link."""
        if self.home.is_dir():
            try:
                subprocess.run(
                    ["gpgconf", "--homedir", self._homedir(), "--kill", "gpg-agent"],
                    capture_output=True,
                    timeout=30,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                log.warning("gpgconf --kill gpg-agent in %s: %s", self.home, exc)
        if self._alias is not None:
            (self._alias / "h").unlink(missing_ok=True)  # the link only: never what it points to
            self._alias.rmdir()
            self._alias = None


def verifies(keyring: Path, signed: Path) -> bool:
    """Whether the clear-signed ``signed`` verifies with the binary keyring ``keyring`` (gpgv, as apt does)."""
    if not keyring.is_file() or not signed.is_file():
        return False
    try:
        done = subprocess.run(
            ["gpgv", "--keyring", str(keyring.resolve()), str(signed)], capture_output=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0
