"""One exception tree for the whole project.

Every error carries the facts needed to act on it (file, line, key, MAC, run id ...) as attributes, not
only inside its message, says whether retrying the same operation may succeed, and carries the HTTP status
a server answers it with (as ironic-python-agent's errors carry ``status_code``). The web layer maps any
``ProvisionError`` to its status in one place (``provision.web.errors``); a handler never picks a status.

The tree (other packages add leaves; each names its status where it differs from its parent's)::

    ProvisionError                          500  base: message, facts, retryable, status_code
    ├── RetryableError                      503  the same call may succeed later
    │   ├── images.StoreBusy                     another writer holds the image store lock
    │   ├── store.StoreUnavailable               the state store (SQLite) locked past its timeout, full or failing
    │   ├── bootfiles.AptFailed                  apt could not fetch boot files
    │   └── agent: FetchFailed, ChunkCorrupt, ServerUnreachable
    └── FatalError                          500  retrying will not fix it
        ├── RequestError                    400  a client's request is malformed
        │   ├── macaddr.BadMac              400  not a MAC address
        │   ├── PayloadTooLarge             413
        │   └── InvalidPayload              422  a body that is not the wire contract (problems: field, message)
        ├── TokenRefused                    403  wrong, expired or used per-boot token
        ├── NotFound                        404  no such run, image, version, chunk
        ├── Conflict                        409  the record's state refuses the call
        │   └── ActionRefused               409  an operator's action the machine's state does not allow
        ├── Unauthorized                    401  no login (the dashboard's actions need one)
        ├── Forbidden                       403  a form without its session's CSRF token
        ├── web.auth.LoginThrottled         429  too many failed logins from one address
        ├── store.UserError                      a dashboard user that cannot be added, changed, removed
        ├── ProbeError                      422  a hardware probe that cannot be read
        ├── RunError                        422  a run operation the rules refuse
        │   └── RunConflict                 409  ... because of the run's state (it ended, a move not allowed)
        ├── ConfigError                          located problems in recipes, config, definitions
        ├── images.ImageError               400  bad image name or reference, refused import or publish
        │   ├── images.ImageNotFound        404
        │   └── images.CorruptImage         500  stored data does not match its digest
        ├── boot.TemplateError                   a boot template missing or not rendering
        ├── certificates.CertificateError   422  a certificate that cannot be made, read or trusted
        │   ├── NothingToCertify            404  no run with an erasure or imaging to state
        │   ├── NotErased                   409  a drive not erased and verified: no certificate of erasure
        │   ├── KeyFileError                500  the signing key or a public key file unreadable
        │   └── SignatureInvalid            422  does not verify (field, key, signed_by)
        └── agent, builder, live, bootfiles, tftp, sshkeys errors (never reach HTTP)

``public_facts`` names the facts a server may show a client next to the message (``{"error": message,
**public facts}``); everything else stays in the server's log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


class ProvisionError(Exception):
    """Base of every error raised on purpose by provision."""

    retryable: ClassVar[bool] = False
    status_code: ClassVar[int] = 500
    public_facts: ClassVar[tuple[str, ...]] = ()

    def __init__(self, message: str, **facts: object) -> None:
        super().__init__(message)
        self.message = message
        self.facts = facts

    def __str__(self) -> str:
        return self.message

    @property
    def http_reason(self) -> str:
        """The message a client sees (some errors add what kind of problem it is)."""
        return self.message

    def http_body(self) -> dict[str, Any]:
        """``{"error": reason, **public facts}``: what a server answers with ``status_code``."""
        shown = {k: self.facts[k] for k in self.public_facts if self.facts.get(k) is not None}
        return {"error": self.http_reason, **shown}


class RetryableError(ProvisionError):
    """A transient failure: the same call may succeed later (network blip, busy resource)."""

    retryable = True
    status_code = 503


class FatalError(ProvisionError):
    """A failure that retrying will not fix (bad input, missing file, refused by policy)."""


class RequestError(FatalError):
    """A client's request is malformed (not JSON, not an object, a bad MAC in a URL)."""

    status_code = 400


class PayloadTooLarge(RequestError):
    status_code = 413


class InvalidPayload(RequestError):
    """A body that does not follow the wire contract; ``problems`` lists ``{"field", "message"}``."""

    status_code = 422
    public_facts = ("problems",)

    def __init__(self, message: str, problems: list[dict[str, str]]) -> None:
        super().__init__(message, problems=problems)
        self.problems = problems


class TokenRefused(FatalError):
    """A per-boot token that is wrong, expired, or already used by another hello."""

    status_code = 403
    public_facts = ("mac", "run")


class NotFound(FatalError):
    status_code = 404


class Conflict(FatalError):
    """The call does not fit the record's state (a run that ended already)."""

    status_code = 409
    public_facts: ClassVar[tuple[str, ...]] = ("run", "state")


class ActionRefused(Conflict):
    """An operator's action (re-image, ready, forget) the machine's state does not allow now."""

    public_facts = ("mac", "state", "action")


class Unauthorized(FatalError):
    """An action of the dashboard without a logged-in session."""

    status_code = 401


class Forbidden(FatalError):
    """A form without the session's CSRF token, or from another site."""

    status_code = 403


class ProbeError(FatalError):
    """A hardware probe folder or file cannot be read at all."""

    status_code = 422

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(f"{path}: {message}", path=path)
        self.path = path


class RunError(FatalError):
    """A run operation the rules refuse (no complete verification for ``done``, an unknown run)."""

    status_code = 422
    public_facts = ("run", "state")

    @property
    def conflict(self) -> bool:
        """True when the run's state is the cause (HTTP 409)."""
        return isinstance(self, RunConflict)


class RunConflict(RunError, Conflict):
    """The run's state refuses the call: it ended already, or the move is not allowed from its state."""

    status_code = 409
    public_facts = ("run", "state")


@dataclass(frozen=True)
class Problem:
    """One problem found in a configuration file, located as precisely as known."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        key = f" {self.key}:" if self.key else ""
        return f"{where}:{key} {self.message}"


class ConfigError(FatalError):
    """One or more problems in configuration files (recipes, server config, image definitions).

    All problems found are carried at once, so the user fixes them in one pass.
    """

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        text = "\n".join(str(p) for p in self.problems)
        super().__init__(text, problems=self.problems)
