"""Errors of live environment builds. Commands run through the image builder's ``Runner``, so a failing
command is its ``StepFailed`` (step, argv, exit code, stderr tail, log) and a missing program ``ToolMissing``;
both are ``ImageBuildError``s, like ``LiveBuildError``."""

from __future__ import annotations

from provision.builder.errors import ImageBuildError

LIVE = "live"  # the name builds run under (Runner.bind, error facts)


class LiveBuildError(ImageBuildError):
    """The live environment cannot be built (wrong input, missing piece, not root); nothing was replaced."""

    def __init__(self, message: str, *, step: str = "", **facts: object) -> None:
        super().__init__(message, image=LIVE, step=step, **facts)
