"""Errors of the boot files: fatal (package or file missing, no apt) and retryable (apt failed)."""

from __future__ import annotations

from collections.abc import Sequence

from provision.errors import FatalError, RetryableError


class BootFilesError(FatalError):
    """Boot files cannot be fetched, unpacked or installed."""


class PackageMissing(BootFilesError):
    """A package, or a file expected inside it, is not there."""

    def __init__(self, message: str, *, package: str, suite: str, path: str | None = None) -> None:
        super().__init__(message)
        self.facts.update(package=package, suite=suite, path=path)
        self.package = package
        self.suite = suite
        self.path = path


class AptFailed(RetryableError):
    """apt-get or apt-cache failed (network, mirror, lock): trying again later may work."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        tail = "\n".join(stderr.strip().splitlines()[-8:])
        words = [argv[0], *(a for a in argv[1:] if not a.startswith("-") and "=" not in a)]
        super().__init__(f"{' '.join(words)} failed ({returncode}): {tail}")
        self.facts.update(argv=list(argv), returncode=returncode, stderr=stderr)
