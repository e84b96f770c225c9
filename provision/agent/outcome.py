"""How one agent run ends: ``Outcome`` (its exit code for /init, the run's state, the reason) and the exit
codes."""

from __future__ import annotations

from dataclasses import dataclass

EXIT_DONE, EXIT_FAILED, EXIT_USAGE, EXIT_POWEROFF, EXIT_REPAIR, EXIT_WAITING = 0, 1, 2, 3, 4, 5


@dataclass(frozen=True)
class Outcome:
    code: int
    state: str  # done | failed | repair | waiting | local
    reason: str | None = None
    run: str | None = None
