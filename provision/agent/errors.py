"""Errors of the agent: each carries its facts (chunk, offset, URL, hashes, target; for grow and the first-boot
credential the device, the tool's argv, exit code and stderr tail) as attributes.

Fatal ones (``WriteError`` and its variants) will not go away by retrying: a bad index, a target too small,
a chunk the server refuses (4xx), a disk that does not read back what was written. Retryable ones may: the
server unreachable past the deadline, or a chunk that kept arriving corrupt (a flaky link or proxy); a new
run resumes where this one stopped, because chunks already right on disk are not fetched again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from provision.errors import FatalError, RetryableError


class WriteError(FatalError):
    """A fatal failure of the writer; ``facts`` name what is wrong (the variants also as attributes)."""


class IndexInvalid(WriteError):
    """The index is not a valid image index (format 1), or not the one expected."""


class TargetError(WriteError):
    """The target cannot be used: missing, not a regular file or block device, unreadable."""


class TargetTooSmall(TargetError):
    def __init__(self, target: str, size: int, disk_size: int) -> None:
        super().__init__(
            f"{target}: {size} bytes, the image needs {disk_size} ({disk_size - size} more)",
            target=target, size=size, disk_size=disk_size,
        )  # fmt: skip
        self.target, self.size, self.disk_size = target, size, disk_size


class HttpRefused(WriteError):
    """The server answered 4xx: the chunk (or index) does not exist there, retrying will not help."""

    def __init__(self, url: str, status: int, *, chunk: int | None = None, offset: int | None = None) -> None:
        where = f" (chunk {chunk} at offset {offset})" if chunk is not None else ""
        super().__init__(f"GET {url}: HTTP {status}{where}", url=url, status=status, chunk=chunk, offset=offset)
        self.url, self.status, self.chunk, self.offset = url, status, chunk, offset


@dataclass(frozen=True)
class Mismatch:
    """One chunk (or hole) that did not read back right after the write and fsync."""

    chunk: int
    offset: int
    length: int
    expected: str  # sha256, or "zeros" for a hole
    actual: str  # sha256 of what was read, or "short read of N bytes"

    def __str__(self) -> str:
        return f"chunk {self.chunk} at {self.offset}+{self.length}: expected {self.expected}, read {self.actual}"


class VerifyFailed(WriteError):
    """The read-back after fsync found chunks that are not what was written: the disk is not trustworthy."""

    def __init__(self, target: str, mismatches: Sequence[Mismatch], *, checked: int) -> None:
        shown = "; ".join(str(m) for m in mismatches[:5])
        more = f" (and {len(mismatches) - 5} more)" if len(mismatches) > 5 else ""
        super().__init__(
            f"{target}: {len(mismatches)} of {checked} chunks did not read back right: {shown}{more}",
            target=target, mismatches=tuple(mismatches), checked=checked,
        )  # fmt: skip
        self.target, self.mismatches, self.checked = target, tuple(mismatches), checked


class FetchFailed(RetryableError):
    """The server stayed unreachable (refused, reset, timeouts, 5xx) until the retry deadline."""

    def __init__(self, url: str, attempts: int, seconds: float, last: str, *, chunk: int | None = None) -> None:
        super().__init__(
            f"GET {url}: gave up after {attempts} attempts in {seconds:.1f} s: {last}",
            url=url, attempts=attempts, seconds=seconds, last=last, chunk=chunk,
        )  # fmt: skip
        self.url, self.attempts, self.seconds, self.last, self.chunk = url, attempts, seconds, last, chunk


class ChunkCorrupt(RetryableError):
    """A chunk arrived wrong (undecodable, wrong length or wrong sha256) on every one of its attempts.

    Nothing of it was written. The facts hold the last attempt's expected and actual hash.
    """

    def __init__(self, chunk: int, offset: int, url: str, expected: str, actual: str, attempts: int) -> None:
        super().__init__(
            f"chunk {chunk} at offset {offset}: {attempts} attempts from {url} gave wrong bytes "
            f"(expected sha256 {expected}, last got {actual})",
            chunk=chunk, offset=offset, url=url, expected=expected, actual=actual, attempts=attempts,
        )  # fmt: skip
        self.chunk, self.offset, self.url = chunk, offset, url
        self.expected, self.actual, self.attempts = expected, actual, attempts


class AgentError(FatalError):
    """A failure of the agent's conversation with the server or of its choices (not of the writer)."""


class ServerUnreachable(RetryableError):
    """An API call kept failing (refused, reset, timeouts, 5xx) until its deadline."""

    def __init__(self, url: str, attempts: int, seconds: float, last: str) -> None:
        super().__init__(
            f"POST {url}: gave up after {attempts} attempts in {seconds:.1f} s: {last}",
            url=url, attempts=attempts, seconds=seconds, last=last,
        )  # fmt: skip
        self.url, self.attempts, self.seconds, self.last = url, attempts, seconds, last


class GrowError(WriteError):
    """Growing the root partition or its file system failed. ``facts`` hold the device and what is known
    (LBAs, the tool's argv, exit code and stderr tail, whether the partition table was already changed)."""

    def __init__(self, device: str, message: str, **facts: object) -> None:
        super().__init__(f"{device}: {message}", device=device, **facts)
        self.device = device


class GptInvalid(GrowError):
    """The disk's primary GPT is missing or damaged (signature, CRC, a field out of range): nothing written."""

    def __init__(self, device: str, problem: str, **facts: object) -> None:
        super().__init__(device, f"GPT not usable: {problem}; nothing was written", problem=problem, **facts)
        self.problem = problem


def _tool_message(argv: Sequence[str], returncode: int | None, stderr: str, meaning: str) -> str:
    code = "no exit status" if returncode is None else f"exit status {returncode}"
    tail = f": {stderr.strip().splitlines()[-1]}" if stderr.strip() else ""
    return f"{' '.join(argv)}: {code} ({meaning}){tail}"


class GrowToolFailed(GrowError):
    """A file-system tool (losetup, e2fsck, resize2fs) failed, timed out or is missing."""

    def __init__(self, device: str, argv: Sequence[str], returncode: int | None, stderr: str, meaning: str,
                 **facts: object) -> None:  # fmt: skip
        super().__init__(
            device, _tool_message(argv, returncode, stderr, meaning),
            argv=list(argv), returncode=returncode, stderr=stderr, meaning=meaning, **facts,
        )  # fmt: skip
        self.argv, self.returncode, self.stderr, self.meaning = list(argv), returncode, stderr, meaning


class SeedError(WriteError):
    """Writing the first-boot credential into the installed system's root file system failed, or what was
    written did not read back right. ``facts`` hold the device and what is known (the partition, the device
    debugfs ran on, the problem); never the credential itself."""

    def __init__(self, device: str, message: str, **facts: object) -> None:
        super().__init__(f"{device}: {message}", device=device, **facts)
        self.device = device


class SeedToolFailed(SeedError):
    """A tool of the seed step (losetup, debugfs) failed, timed out or is missing: the argv, the exit code,
    the stderr tail and what it means are facts."""

    def __init__(self, device: str, argv: Sequence[str], returncode: int | None, stderr: str, meaning: str,
                 **facts: object) -> None:  # fmt: skip
        super().__init__(
            device, _tool_message(argv, returncode, stderr, meaning),
            argv=list(argv), returncode=returncode, stderr=stderr, meaning=meaning, **facts,
        )  # fmt: skip
        self.argv, self.returncode, self.stderr, self.meaning = list(argv), returncode, stderr, meaning
