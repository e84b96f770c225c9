"""The server's SSH client for a PC in its live environment (paramiko): log in with the server's own key, trust
only the host key the PC reported in its authenticated hello, run the one hook command with a job on stdin.

- No password authentication, no agent, no keys from ~/.ssh: the server's Ed25519 key (provision.sshkeys) is
  the only credential; the live environment trusts only that key (its authorized_keys is built in).
- The host key is pinned for the boot: the hello (which carries the per-boot token) reports the live
  environment's public host key; a server answering with any other key is refused (``HostKeyMismatch``), as
  is one that cannot be reached (``LiveUnreachable``) or refuses the key (``LiveRefusedKey``).
- One command only (``provision.wire.hooks.HOOK_COMMAND``); the job travels as JSON on its stdin and the
  result comes back on its stdout: no shell string is built from any data.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko

from provision.errors import FatalError, RetryableError
from provision.wire.hooks import HOOK_COMMAND, MAX_ANSWER, MAX_OUTPUT, HookJob, HookResult

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 15.0
MARGIN = 30.0  # seconds past a hook's own timeout before the server gives up on the runner


class SshError(FatalError):
    """Talking to a live environment over SSH failed; facts: address, what failed."""


class LiveUnreachable(SshError, RetryableError):
    """No SSH answer from the live environment (powered off, cable out, dropbear not running)."""


class HostKeyMismatch(SshError):
    """The live environment's host key is not the one its hello reported: another machine, or one in between."""


class LiveRefusedKey(SshError):
    """The live environment refused the server's key (a live environment built for another server)."""


@dataclass(frozen=True)
class HostKey:
    """A public host key as an authorized_keys-style line: ``ssh-ed25519 AAAA... [comment]``."""

    kind: str
    blob: bytes

    @classmethod
    def parse(cls, line: str) -> HostKey:
        fields = line.split()
        if len(fields) < 2 or fields[0] not in ("ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"):
            raise SshError(f"not a public host key line: {line[:80]!r}", line=line[:200])
        try:
            blob = base64.b64decode(fields[1], validate=True)
        except ValueError:
            raise SshError(f"host key is not base64: {line[:80]!r}", line=line[:200]) from None
        return cls(fields[0], blob)

    def paramiko_key(self) -> paramiko.PKey:
        return paramiko.PKey.from_type_string(self.kind, self.blob)


class _Pinned(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]  # paramiko has no type hints
    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise HostKeyMismatch(
            f"{hostname}: host key {key.get_name()} {key.fingerprint} is not the one its hello reported",
            address=hostname, fingerprint=key.fingerprint,
        )  # fmt: skip


class LiveSession:
    """One SSH connection to a PC's live environment, host key pinned, logged in as root with the server key."""

    def __init__(self, address: str, host_key: HostKey, server_key: Path, *, port: int = 22) -> None:
        self.address, self.port = address, port
        self.client = paramiko.SSHClient()
        self.client.get_host_keys().add(self._known_name(), host_key.kind, host_key.paramiko_key())
        self.client.set_missing_host_key_policy(_Pinned())
        try:
            self.client.connect(
                address, port=port, username="root", key_filename=str(server_key), timeout=CONNECT_TIMEOUT,
                banner_timeout=CONNECT_TIMEOUT, auth_timeout=CONNECT_TIMEOUT, allow_agent=False,
                look_for_keys=False, disabled_algorithms={"pubkeys": []},
            )  # fmt: skip
        except HostKeyMismatch:
            self.client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            self.client.close()
            raise HostKeyMismatch(
                f"{address}: host key {exc.key.fingerprint} is not the one its hello reported "
                f"({exc.expected_key.fingerprint})", address=address,
            ) from None  # fmt: skip
        except paramiko.AuthenticationException as exc:
            self.client.close()
            raise LiveRefusedKey(
                f"{address}: the live environment refused the server's key ({exc})", address=address
            ) from None
        except (TimeoutError, OSError, paramiko.SSHException) as exc:
            self.client.close()
            raise LiveUnreachable(
                f"{address}:{port}: no SSH answer ({type(exc).__name__}: {exc})", address=address
            ) from None

    def _known_name(self) -> str:
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"

    def run_hook(self, job: HookJob) -> HookResult:
        """Run ``job`` with the live environment's hook runner; its result (a HookResult with ``error`` when the
        runner answered nothing usable)."""
        started = time.monotonic()
        try:
            stdin, stdout, stderr = self.client.exec_command(HOOK_COMMAND, timeout=job.timeout + MARGIN)  # nosec B601  # a constant
            stdin.write(job_bytes(job))
            stdin.channel.shutdown_write()
            answer = stdout.read(MAX_ANSWER + 1)
            status = stdout.channel.recv_exit_status()
            errors = stderr.read(4096).decode("utf-8", "replace")
        except (TimeoutError, OSError, paramiko.SSHException) as exc:
            raise LiveUnreachable(
                f"{self.address}: hook {job.name}: the SSH session failed ({type(exc).__name__}: {exc})",
                address=self.address, hook=job.name,
            ) from None  # fmt: skip
        seconds = time.monotonic() - started
        try:
            return HookResult.from_dict(answer_object(answer))
        except (ValueError, FatalError) as exc:
            why = f"the hook runner answered no result (exit status {status}): {str(exc)[:200]}; {errors[-500:]}"
            log.warning("%s: hook %s: %s", self.address, job.name, why)
            return HookResult(job.name, None, False, round(seconds, 3), errors[-MAX_OUTPUT:], len(errors), error=why)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> LiveSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def job_bytes(job: HookJob) -> bytes:
    return json.dumps(job.to_dict()).encode()


def answer_object(data: bytes) -> object:
    """The runner's answer as JSON (bounded; strict: no NaN)."""
    if len(data) > MAX_ANSWER:
        raise ValueError(f"answer over {MAX_ANSWER} bytes")
    return json.loads(data.decode("utf-8"), parse_constant=_no_constant)


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")
