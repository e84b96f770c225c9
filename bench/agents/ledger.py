"""What the simulated agents did that the server promised to keep: the ledger the store is checked against.

Each run the agents started is a ``RunLog``: the stages its accepted progress moved it to, how it ended
(``done``/``failed`` by a report, ``abandoned`` by a simulated power cut, later ``superseded`` by the PC's next
run), and its progress posts split by what the server promised (docs/api.md: at most one ``progress`` event
per run every 2 s, the last one always):

- **must**: the run's first accepted post, a post whose ``bytes_done`` reached ``bytes_total``, and a post sent
  at least 2 s after the answer to the newest earlier post that may have been stored (the server read the
  clock after the send of this one and before the answer to that one: the same CLOCK_MONOTONIC);
- **maybe**: any other accepted post, and a post that got no answer (it may have been stored).

The agents pace their posts 2.05 s or more after the previous answer, so every accepted post is a *must*:
``maybe`` stays 0 unless something went wrong, and then the check gives a range instead of an equality.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

PROGRESS_EVERY = 2.0  # provision.runs.PROGRESS_EVERY: the promise the count relies on
NETBOOT_NOTE_EVERY = 30.0  # provision.boot.NETBOOT_NOTE_EVERY: one `netboot` event per MAC in this window


@dataclass
class RunLog:
    """One run as its agent saw it."""

    mac: str
    stage: str = "inventoried"  # the furthest stage an accepted progress moved it to
    moves: int = 0  # stage changes made by accepted progress (each a `run` event)
    end: str | None = None  # done | failed (the report's answer) | abandoned | superseded
    reported_with_verification: bool = False
    progress_sent: int = 0
    progress_must: int = 0
    progress_maybe: int = 0
    last_candidate: float | None = None  # answer time of the newest post that may have been stored

    def progress(self, stage: str, done: int, total: int, sent: float, answered: float, status: int | None) -> None:
        """Classify one progress post (``status`` None: no answer)."""
        self.progress_sent += 1
        if status is not None and 400 <= status < 500:
            return  # refused before anything was stored
        if status != 200:
            self.progress_maybe += 1
            self.last_candidate = answered
            return
        first = self.last_candidate is None and self.progress_must == 0
        if first or done >= total or (self.last_candidate is not None and sent - self.last_candidate >= PROGRESS_EVERY):
            self.progress_must += 1
        else:
            self.progress_maybe += 1
        self.last_candidate = answered
        if stage != self.stage:
            self.stage = stage
            self.moves += 1


@dataclass
class Ledger:
    """Everything the agents of one side did, by count, and each run they started."""

    runs: dict[str, RunLog] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)  # unexpected answers (the first 20 kept)
    netbooted_at: dict[str, float] = field(default_factory=dict)  # MAC -> when its last netboot was noted

    def problem(self, text: str) -> None:
        self.counts["unexpected"] += 1
        if len(self.problems) < 20:
            self.problems.append(text)

    def netboot(self, mac: str, run_open: bool, now: float) -> None:
        """A netboot: the server keeps a `netboot` event when the MAC has a run in flight, at most one per
        NETBOOT_NOTE_EVERY (the agents keep two netboots of a MAC further apart than that)."""
        self.counts["netboots"] += 1
        last = self.netbooted_at.get(mac)
        if run_open and (last is None or now - last >= NETBOOT_NOTE_EVERY):
            self.counts["netboots_noted"] += 1
            self.netbooted_at[mac] = now

    def expected_events(self) -> Counter[str]:
        """The events the store must hold, by kind, from what the agents did and what the server answered."""
        c = self.counts
        want: Counter[str] = Counter()
        want["boot"] = c["scripts_live"] + c["scripts_local"]  # a token issued; a known MAC sent to its disk
        want["netboot"] = c["netboots_noted"]
        want["hello"] = c["hellos"]
        want["decision"] = c["hellos"]  # every hello carries a probe: a recipe decision
        want["state"] = c["hellos"]  # ... and the machine's identity and recipe recorded
        want["progress"] = sum(r.progress_must for r in self.runs.values())
        want["write"] = c["reports_with_writer"]
        want["grow"] = c["reports_with_grow"]
        want["run-failed"] = c["reports_failed_unverified"]
        runs = 0
        for run in self.runs.values():
            runs += 1 + run.moves  # created, then each stage change
            if run.end == "done":
                runs += {"inventoried": 3, "writing": 2}.get(run.stage, 1)  # the report completes the moves
            elif run.end in ("done", "failed", "superseded"):
                runs += 1
        want["run"] = runs
        return want

    def progress_maybe(self) -> int:
        return sum(r.progress_maybe for r in self.runs.values())
