"""Errors of image builds: each carries the facts to act on (image, step, package, command, exit code, stderr)."""

from __future__ import annotations

from collections.abc import Sequence

from provision.errors import FatalError

STDERR_TAIL_LINES = 20


def tail(text: str, lines: int = STDERR_TAIL_LINES) -> str:
    """The last non-empty ``lines`` lines of ``text``."""
    kept = [line.rstrip() for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


class ImageBuildError(FatalError):
    """A build failed; ``current`` of the image was left as it was."""

    def __init__(self, message: str, *, image: str = "", step: str = "", **facts: object) -> None:
        super().__init__(message, image=image, step=step, **facts)
        self.image = image
        self.step = step


class PackageNotFound(ImageBuildError):
    """A package named by the definition is not in the archive (or has no installation candidate)."""

    def __init__(self, package: str, *, image: str = "", step: str = "", suite: str = "", detail: str = "") -> None:
        where = f" in {suite}" if suite else ""
        text = f"image {image}: package {package} not found{where}" + (f": {detail}" if detail else "")
        super().__init__(text, image=image, step=step, package=package, suite=suite)
        self.package = package
        self.suite = suite


class StepFailed(ImageBuildError):
    """A command of a build step exited non-zero (or timed out, exit code -1)."""

    def __init__(
        self, *, image: str, step: str, argv: Sequence[str], returncode: int, stderr: str, log: str = ""
    ) -> None:
        stderr_tail = tail(stderr)
        where = f" (build log {log})" if log else ""
        super().__init__(
            f"image {image}: step {step}: {argv[0]} failed with exit code {returncode}{where}:\n{stderr_tail}",
            image=image,
            step=step,
            argv=list(argv),
            returncode=returncode,
            stderr_tail=stderr_tail,
            log=log,
        )
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr_tail = stderr_tail


class ToolMissing(ImageBuildError):
    """A program the build needs is not installed; ``package`` is the Debian package that has it."""

    def __init__(self, tool: str, package: str, *, image: str = "", step: str = "") -> None:
        super().__init__(
            f"image {image}: step {step}: {tool} not found (install the Debian package {package})",
            image=image,
            step=step,
            tool=tool,
            package=package,
        )
        self.tool = tool
        self.package = package


class BuildInterrupted(ImageBuildError):
    """A test or the operator stopped the build on purpose (``Runner.fail_at``)."""
