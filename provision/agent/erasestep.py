"""The agent's erasure step (issue 15): every drive of the machine erased and verified (``erasure.engine``),
its progress posted and drawn, the records posted; the server answers the run's state.

- An erase-only run (the hello's ``EraseAnswer``: a PC that leaves as parts): the server answers ``done``
  when every drive is erased and verified, else ``repair`` with the reason.
- An image run whose plan says ``erase``: the drives are erased BEFORE the write; the server answers
  ``writing`` (go on and image) or ``repair`` / ``failed`` (stop, with the reason).

The PC's screen shows the stage "effacement" (erasing), how many drives, each drive's progress and the whole
in percent. Progress goes to ``POST /api/v1/runs/<run>/erasure/progress`` from a background thread (best
effort: a slow server never slows the drives).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from provision.agent.client import ErasurePoster, ServerApi
from provision.agent.disks import Disk
from provision.agent.erasure.engine import Erased, Stage, erase_drives, skip
from provision.agent.inventory import Runner
from provision.agent.outcome import EXIT_DONE, EXIT_FAILED, EXIT_REPAIR, Outcome
from provision.agent.screen import Console
from provision.wire.api import RunAnswer
from provision.wire.erasure import ErasePlan, ErasureProgress, ErasureReport

log = logging.getLogger(__name__)

ERASING = "erasing"
HEARTBEAT = 300.0  # seconds between re-posts of the last progress while a drive reports none (a token kept alive)
STAGE_FR = {"erasing": "", "verifying": "vérif. "}  # the screen's words for a drive's stage (French)


class ErasureMeter:
    """Each drive's stage and fraction, for the screen and the server: the erasure counts for ``share`` of a
    drive's progress, its read-back for the rest."""

    def __init__(self, devices: Sequence[str], share: float) -> None:
        self.devices = list(devices)
        self.share = share
        self.stages: dict[str, Stage] = dict.fromkeys(self.devices, "erasing")
        self.fractions: dict[str, float | None] = dict.fromkeys(self.devices, None)
        self.lock = threading.Lock()

    def update(self, device: str, stage: Stage, fraction: float | None) -> tuple[int, str]:
        """Record one drive's news: (percent of the whole, the screen's line)."""
        with self.lock:
            self.stages[device] = stage
            self.fractions[device] = None if fraction is None else max(0.0, min(1.0, fraction))
            return self.percent(), self.line()

    def percent(self) -> int:
        parts = []
        for name in self.devices:
            f = self.fractions.get(name) or 0.0
            parts.append(self.share + (1 - self.share) * f if self.stages[name] == "verifying" else self.share * f)
        return min(int(100 * sum(parts) / len(parts)), 99) if parts else 0

    def line(self) -> str:
        """``2 disques : sda 40 %, nvme0n1 vérif. 12 %`` (French: the screen's language)."""
        if not self.devices:
            return "aucun disque à effacer"
        words = []
        for name in self.devices:
            known = self.fractions.get(name)
            words.append(f"{name} {STAGE_FR[self.stages[name]]}{'?' if known is None else f'{int(known * 100)} %'}")
        count = len(self.devices)
        return f"{count} disque{'s' if count > 1 else ''} : " + ", ".join(words)

    def progress(self, token: str) -> ErasureProgress:
        """What the server gets: each drive's fraction; ``verifying`` once every drive is being read back."""
        with self.lock:
            every: Stage = "verifying" if all(s == "verifying" for s in self.stages.values()) else "erasing"
            return ErasureProgress(token, dict(self.fractions), stage=every)


def erase_machine(
    run_id: str,
    plan: ErasePlan,
    disks: Sequence[tuple[Disk, Path]],
    live: set[str],
    *,
    api: ServerApi,
    console: Console,
    run: Runner,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
    direct: bool | None = None,
) -> tuple[RunAnswer, Erased]:
    """Erase every drive (but the live medium and removable ones), post the records; the server's answer.

    Raises what posting raises (``ServerUnreachable``, ``ApiRefused``): the caller reports the failure."""
    devices = [d.name for d, _ in disks if skip(d, live) is None]
    meter = ErasureMeter(devices, 0.5 if plan.verify == "full" else 0.9)
    console.show(stage=ERASING, word=None, percent=0, reason=meter.line(), action=None)
    poster = ErasurePoster(api, run_id, console.number)

    def progress(device: str, stage: Stage, fraction: float | None) -> None:
        percent, line = meter.update(device, stage, fraction)
        console.show(stage=ERASING, percent=percent, reason=line)
        poster.put(meter.progress(api.token))

    # a firmware erase (an ATA SECURITY ERASE UNIT of a large disk: hours) reports nothing while it runs: the last
    # progress goes again every HEARTBEAT seconds, so the server keeps the run's token alive (it extends the token
    # on each accepted progress) and the dashboard sees the PC is still at work
    stopped = threading.Event()

    def heartbeat() -> None:
        while not stopped.wait(HEARTBEAT):
            poster.put(meter.progress(api.token))

    beating = threading.Thread(target=heartbeat, name=f"erasure-heartbeat-{run_id[:8]}", daemon=True)
    log.info("%s: run %s: erasing %d drives (%s)", api.mac, run_id, len(devices), ", ".join(devices) or "none")
    beating.start()
    try:
        erased = erase_drives(
            plan, disks, live=live, run=run, sleep=sleep, progress=progress, clock=clock, log_id=run_id,
            direct=direct,
        )  # fmt: skip
    finally:
        stopped.set()
        beating.join()
        poster.close()
    done = sum(1 for d in erased.drives if d.ok)
    log.info("%s: run %s: %d of %d drives erased and verified", api.mac, run_id, done, len(erased.drives))
    answer = api.erasure(run_id, ErasureReport(api.token, erased.drives, erased.skipped))
    console.server(answer.screen)
    return answer, erased


def erasure_outcome(run_id: str, answer: RunAnswer, *, only: bool, console: Console) -> Outcome | None:
    """What the server's answer to the records means for the run: None: go on and write (an image run answered
    ``writing``); else how the run ends (``done`` for an erase-only run, ``repair`` or ``failed`` with the
    reason), drawn on the PC's screen."""
    if answer.state == "writing" and not only:
        return None
    if answer.state == "done" and only:
        console.show(stage="done", word=None, percent=100, reason=None, action=None)
        return Outcome(EXIT_DONE, "done", None, run_id)
    reason = answer.reason or f"server says {answer.state} after the erasure"
    console.failed(reason, answer.screen)
    return Outcome(EXIT_REPAIR if answer.state == "repair" else EXIT_FAILED, answer.state, reason, run_id)
