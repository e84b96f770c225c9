"""One exception tree for the whole project.

Every error carries the facts needed to act on it (file, line, key, MAC, run id ...) as attributes,
not only inside its message, and says whether retrying the same operation may succeed.
"""

from __future__ import annotations

from dataclasses import dataclass


class ProvisionError(Exception):
    """Base of every error raised on purpose by provision."""

    retryable: bool = False

    def __init__(self, message: str, **facts: object) -> None:
        super().__init__(message)
        self.message = message
        self.facts = facts

    def __str__(self) -> str:
        return self.message


class RetryableError(ProvisionError):
    """A transient failure: the same call may succeed later (network blip, busy resource)."""

    retryable = True


class FatalError(ProvisionError):
    """A failure that retrying will not fix (bad input, missing file, refused by policy)."""


class ProbeError(FatalError):
    """A hardware probe folder or file cannot be read at all."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(f"{path}: {message}", path=path)
        self.path = path


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
