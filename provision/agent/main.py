"""The agent's run in the live environment: probe -> hello -> plan -> [erase every drive] -> target disk ->
write + verify -> grow -> first-boot credential -> report. An erase-only answer (a PC that leaves as parts)
erases every drive, verifies and reports it, and nothing is written. A capture answer reads the disk and sends
it as a new version of the image (``capture.step``; nothing is written). ``run_agent`` returns an ``Outcome``
whose ``code`` tells the live environment's /init what to do:

    0  done: the run is recorded done (verified), reboot     3  power off (the recipe says: local disk)
    1  failed: recorded failed with the reason, stay up       4  repair: the server's reasons, stay up
    2  usage: the agent cannot start (no server, token, MAC)  5  waiting (only with ``once``)

Every failure after the plan is reported to the server (the run ends ``failed`` with the reason and the
error's facts); a write that does not verify is never reported as a success, nor a drive whose erasure does
not verify (``erasestep``: the server answers ``writing``, ``done`` (erase-only) or ``repair``).

The PC's own screen (``provision.agent.screen``, ``AgentConfig.screen``: /dev/tty1 in the live environment)
follows the run: the tile number and stage from the hello's answer, the erasure of the drives, the progress
of the write and the read-back, the hooks, and the end: done, or failed / repair / waiting with the reason the
dashboard shows.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provision.agent.client import ProgressPoster, ServerApi, screen_of
from provision.agent.disks import Disk, choose_target, disks_in_folder, live_medium_devices, parse_lsblk_disks
from provision.agent.errors import AgentError
from provision.agent.fetch import Fetcher, HttpSession, RetryPolicy
from provision.agent.hello import args_from_kernel, boot_info, missing, read_probe_folder, ssh_host_key
from provision.agent.index import Index, read_index
from provision.agent.inventory import Runner, collect_probe
from provision.agent.multicast import MulticastSource, UdpReceiver
from provision.agent.multicast.source import Receiver
from provision.agent.outcome import (
    EXIT_DONE,
    EXIT_FAILED,
    EXIT_POWEROFF,
    EXIT_REPAIR,
    EXIT_USAGE,
    EXIT_WAITING,
    Outcome,
)
from provision.agent.progress import Progress
from provision.agent.report import (
    PassTally,
    WriteReport,
    error_facts,
    held_note,
    held_outcome,
    over_passes,
    record_target,
    transfer_report,
    verification,
    writer_summary,
)
from provision.agent.screen import CALL_IT, Console
from provision.agent.seed import SeedResult
from provision.agent.writer import WIPES, http_source, new_session, write_image
from provision.errors import ProvisionError, RetryableError
from provision.wire import paths
from provision.wire.api import (
    CaptureAnswer,
    EraseAnswer,
    ImageAnswer,
    LocalAnswer,
    Plan,
    RepairAnswer,
    Report,
    RunAnswer,
    Stage,
)
from provision.wire.carousel import MulticastPlan, TransferReport
from provision.wire.erasure import ErasePlan

# main still exports what moved to hello.py, outcome.py and report.py (the CLI, /init's tests, the test suite)
__all__ = [
    "EXIT_DONE", "EXIT_FAILED", "EXIT_POWEROFF", "EXIT_REPAIR", "EXIT_USAGE", "EXIT_WAITING", "Agent", "AgentConfig",
    "Outcome", "args_from_kernel", "boot_info", "error_facts", "list_disks", "missing", "read_probe_folder",
    "record_target", "run_agent", "ssh_host_key", "verification", "writer_summary",
]  # fmt: skip
log = logging.getLogger(__name__)

MAX_WAIT = 300.0
HOOKS_POLL = 5.0  # seconds between questions about a run whose hooks run


@dataclass(frozen=True)
class AgentConfig:
    server: str
    mac: str
    token: str
    probe_dir: Path | None = None  # a probe folder to send as it is (no tools run)
    disks_from: Path | None = None  # files standing in for disks (see disks_in_folder)
    workers: int = 4
    once: bool = False  # a "wait" answer ends the agent (EXIT_WAITING) instead of asking again later
    hello_deadline: float = 600.0
    write_attempts: int = 3  # whole write passes on a retryable failure (each resumes: right chunks are kept)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    direct: bool | None = None
    target_record: Path | None = None  # where the imaged disk's path goes for the hook runner
    proc_root: Path = Path("/proc")
    sys_root: Path = Path("/sys")
    host_key_file: Path | None = Path("/etc/dropbear/dropbear_ed25519_host_key")  # what /init made dropbear use
    hooks_deadline: float = 4 * 3600.0  # seconds to wait for the server to run the hooks after the report
    screen: Path | None = None  # the console the PC's screen is drawn on (/dev/tty1), None: no screen


def list_disks(cfg: AgentConfig, run: Runner) -> tuple[list[tuple[Disk, Path]], set[str]]:
    """The machine's disks with their device paths, and the names holding the live medium."""
    if cfg.disks_from is not None:
        return list(disks_in_folder(cfg.disks_from)), set()
    done = run(["lsblk", "--json", "-b", "-O"], capture_output=True, timeout=60, check=False)
    if done.returncode != 0:
        stderr = bytes(done.stderr or b"").decode(errors="replace")[-300:]
        raise AgentError(f"lsblk failed with exit code {done.returncode}: {stderr}", exit_code=done.returncode)
    disks = parse_lsblk_disks(bytes(done.stdout).decode("utf-8", errors="replace"))
    mounts = (cfg.proc_root / "mounts").read_text(errors="replace")
    cmdline = (cfg.proc_root / "cmdline").read_text(errors="replace")
    return [(d, Path("/dev") / d.name) for d in disks], live_medium_devices(mounts, disks, cmdline)


class Agent:
    """One boot's conversation with the server and the work it orders."""

    def __init__(
        self,
        cfg: AgentConfig,
        *,
        api: ServerApi | None = None,
        run: Runner = subprocess.run,
        sleep: Callable[[float], None] = time.sleep,
        grow: Callable[[Path], Any] | None = None,  # grow_root, or None: never grow
        seed: Callable[[Path, str], SeedResult] | None = None,  # write_firstboot_secret, or None: never write it
        chunk_session: Callable[[int], HttpSession] | None = None,  # workers -> the session for index and chunks
        console: Console | None = None,  # the PC's screen (default: on cfg.screen)
        multicast_receiver: Callable[[MulticastPlan], Receiver] | None = None,  # default: the plan's UDP group
    ) -> None:
        self.cfg = cfg
        self.console = console or Console(cfg.screen, mac=cfg.mac)
        self.api = api or ServerApi(cfg.server, cfg.mac, cfg.token, deadline=cfg.hello_deadline, sleep=sleep)
        self.run = run
        self.sleep = sleep
        self.grow = grow
        self.seed = seed
        self.chunk_session = chunk_session or new_session
        self.multicast_receiver = multicast_receiver or (lambda plan: UdpReceiver(plan, cfg.server, log_id=cfg.mac))
        self.transfer: TransferReport | None = None  # how the chunks came (the report's ``transfer``)

    def probe(self) -> tuple[dict[str, str], list[str]]:
        if self.cfg.probe_dir is not None:
            return read_probe_folder(self.cfg.probe_dir)
        folder = Path("/run/provision/probe")
        warnings = collect_probe(folder, run=self.run, mac=self.cfg.mac)
        files, more = read_probe_folder(folder)
        return files, warnings + more

    def ask(self) -> ImageAnswer | EraseAnswer | CaptureAnswer | Outcome:
        """Hello until the server gives a plan, an erasure or a capture (or says repair / local / wait with
        ``once``)."""
        self.console.show(stage="booting")
        files, warnings = self.probe()
        for warning in warnings:
            log.warning("%s: probe: %s", self.cfg.mac, warning)
        boot = boot_info(self.cfg.sys_root)
        host_key = ssh_host_key(self.cfg.host_key_file, self.run)
        while True:
            answer = self.api.hello(boot, files, warnings, host_key)
            self.console.server(answer.screen)
            if isinstance(answer, ImageAnswer | EraseAnswer | CaptureAnswer):
                return answer
            if isinstance(answer, RepairAnswer):
                reasons = "; ".join(answer.reasons) or None
                if answer.screen is None or not answer.screen.reason:
                    self.console.show(stage="repair", word=None, reason=reasons, action=CALL_IT if reasons else None)
                return Outcome(EXIT_REPAIR, "repair", reasons)
            if isinstance(answer, LocalAnswer):
                return Outcome(EXIT_POWEROFF, "local", answer.reason or "recipe says: local disk")
            reason = answer.reason or "no reason given"
            if answer.screen is None or not answer.screen.reason:
                self.console.show(stage="waiting", word=None, reason=reason, action=CALL_IT)
            if self.cfg.once:
                return Outcome(EXIT_WAITING, "waiting", reason)
            delay = min(float(answer.retry_after or 30), MAX_WAIT)
            log.info("%s: server says wait (%s); asking again in %.0f s", self.cfg.mac, reason, delay)
            self.sleep(delay)

    def image(self, run_id: str, plan: Plan) -> tuple[WriteReport, Path]:
        """Index -> target -> write + verify (retried passes resume). Raises on failure."""
        cfg = self.cfg
        wipe = plan.wipe or "zero"
        if wipe not in WIPES:
            raise AgentError(f"plan has wipe {str(wipe)[:40]!r}, not one of {', '.join(WIPES)}", wipe=wipe)
        session = self.chunk_session(cfg.workers)
        try:
            fetcher = Fetcher(cfg.server, session, cfg.retry)
            url = fetcher.url(plan.index_url)
            index = read_index(fetcher.get(url), source=url)
            disks, live = list_disks(cfg, self.run)
            disk = choose_target([d for d, _ in disks], plan.target_disk, index.disk_size, live)
            path = dict((d.name, p) for d, p in disks)[disk.name]
            log.info("%s: run %s: %s onto %s (%s)", cfg.mac, run_id, plan.image, path, disk.model or "?")
            if plan.held is not None:
                held_note(cfg.mac, run_id, plan.held, path)
            poster = ProgressPoster(self.api, run_id, self.console.number)

            def progress(p: Progress) -> None:
                stage: Stage = "verifying" if p.stage == "verifying" else "writing"
                self.console.progress(stage, p.done, p.total)
                poster.submit(stage, p.done, p.total, p.rate)

            try:
                report = self._write(run_id, plan, index, path, wipe, progress, session)
            finally:
                poster.close()
            if plan.held is not None:
                held_outcome(cfg.mac, run_id, plan.held, report)
        finally:
            close = getattr(session, "close", None)
            if close is not None:
                close()
        return report, path

    def _write(
        self,
        run_id: str,
        plan: Plan,
        index: Index,
        path: Path,
        wipe: Any,
        progress: Callable[[Progress], None],
        session: HttpSession,
    ) -> WriteReport:
        """Write passes (a retried pass resumes); the first by the plan's multicast carousel when it has one,
        the others by HTTP. ``self.transfer`` says how the chunks came: after a failure (of any kind) too, the
        figures so far."""
        multicast = None if plan.multicast is None else MulticastSource(
            plan.multicast, index, run=run_id, token=self.cfg.token, api=self.api, open_receiver=self.multicast_receiver
        )  # fmt: skip
        written = False
        tallies: list[PassTally] = []  # what each pass fetched, a failed one too
        try:
            for attempt in range(1, self.cfg.write_attempts + 1):
                tallies.append(PassTally())
                try:
                    report = write_image(
                        self.cfg.server, index, path, wipe=wipe, workers=self.cfg.workers, progress=progress,
                        session=session, expected_digest=plan.digest, retry=self.cfg.retry, direct=self.cfg.direct,
                        log_id=run_id, source=multicast if attempt == 1 and multicast is not None else http_source,
                        tally=tallies[-1],
                    )  # fmt: skip
                except RetryableError as exc:
                    if attempt == self.cfg.write_attempts:
                        raise
                    log.warning("%s: run %s: write pass %d failed (%s); resuming", self.cfg.mac, run_id, attempt, exc)
                    continue
                report = over_passes(report, tallies)
                self.transfer = transfer_report(report, multicast.report() if multicast else None, tallies)
                written = True
                return report
        finally:
            if multicast is not None:
                multicast.close()
                if not written:  # every failure's report carries the figures so far (closed: its time counted)
                    self.transfer = multicast.report()
        raise AssertionError("unreachable")

    def wait_for_hooks(self, run_id: str) -> RunAnswer:
        """Ask the server about the run until its hooks have run (a final state) or ``hooks_deadline`` passed."""
        log.info("%s: run %s verified; the server runs its hooks", self.cfg.mac, run_id)
        self.console.show(stage="hooks", word=None, percent=None, reason=None, action=None)
        waited = 0.0
        while waited < self.cfg.hooks_deadline:
            self.sleep(HOOKS_POLL)
            waited += HOOKS_POLL
            try:
                recorded = self.api.get(paths.run(run_id) + "?screen=1")
            except ProvisionError as exc:  # the server restarting: ask again
                log.warning("%s: run %s: %s", self.cfg.mac, run_id, exc)
                continue
            state = str(recorded.get("state"))
            if state in ("done", "failed", "repair"):
                reason = recorded.get("reason")
                return RunAnswer(run_id, state, None if reason is None else str(reason), screen_of(recorded))
        return RunAnswer(run_id, "hooks", f"the hooks did not finish within {self.cfg.hooks_deadline:.0f} s")

    def _failed(self, run_id: str, exc: BaseException, report: WriteReport | None, what: str = "") -> Outcome:
        """Report the failure (with the verification when the write got that far) and end the run."""
        reason = f"{what}{type(exc).__name__}: {exc}"[:2000]
        log.error("%s: run %s failed: %s", self.cfg.mac, run_id, reason)
        verified = None if report is None else verification(report)
        writer = None if report is None else writer_summary(report)
        body = Report(self.cfg.token, False, reason, verified, error_facts(exc), writer=writer, transfer=self.transfer)
        try:
            answer = self.api.report(run_id, body)
        except Exception:
            self.console.failed(reason)
            raise
        self.console.failed(reason, answer.screen)
        return Outcome(EXIT_FAILED, answer.state or "failed", reason, run_id)

    def _seed(self, run_id: str, path: Path, secret: str) -> dict[str, Any]:
        """Write the plan's first-boot credential into the root file system: the report's ``firstboot_secret``
        (``written`` or ``skipped: <why>``) and ``firstboot_seed`` (what was done). Never the secret itself."""
        if self.seed is None:
            summary, detail = "skipped: this agent was started without the seed step", None
        else:
            result = self.seed(path, secret)
            summary, detail = result.summary(), result.to_dict()
        log.info("%s: run %s: first-boot credential %s", self.cfg.mac, run_id, summary)
        return {"firstboot_secret": summary, "firstboot_seed": detail}

    def erase(self, run_id: str, plan: ErasePlan, *, only: bool) -> Outcome | None:
        """Erase and verify every drive, post the records; None when the server says go on and write."""
        from provision.agent.erasestep import erase_machine, erasure_outcome  # imported when asked: a faster start

        try:
            disks, live = list_disks(self.cfg, self.run)
            answer, _ = erase_machine(run_id, plan, disks, live, api=self.api, console=self.console, run=self.run,
                                      sleep=self.sleep, direct=self.cfg.direct)  # fmt: skip
        except Exception as exc:  # reported: the run must not stay open
            return self._failed(run_id, exc, None, "the erasure failed: ")
        return erasure_outcome(run_id, answer, only=only, console=self.console)

    def run_once(self) -> Outcome:
        asked = self.ask()
        if isinstance(asked, Outcome):
            return asked
        if isinstance(asked, EraseAnswer):
            return self.erase(asked.run, asked.erase, only=True) or Outcome(EXIT_FAILED, "failed", None, asked.run)
        if isinstance(asked, CaptureAnswer):
            from provision.agent.capture.step import capture_disk, capture_outcome  # imported when asked

            try:
                answer = capture_disk(asked.run, asked.capture, *list_disks(self.cfg, self.run), api=self.api,
                                      console=self.console, workers=self.cfg.workers)  # fmt: skip
            except Exception as exc:  # reported: the run must not stay open
                return self._failed(asked.run, exc, None, "the capture failed: ")
            return capture_outcome(asked.run, answer, self.console)
        run_id, plan = asked.run, asked.plan
        if plan.erase is not None and (stopped := self.erase(run_id, plan.erase, only=False)) is not None:
            return stopped
        try:
            report, path = self.image(run_id, plan)
        except Exception as exc:  # every failure after the plan is reported: the run must not stay open
            return self._failed(run_id, exc, None)
        if self.cfg.target_record is not None:
            record_target(self.cfg.target_record, path)
        grown: dict[str, Any] | None = None
        if self.grow is not None and plan.grow_root:
            try:
                grown = self.grow(path).to_dict()
            except Exception as exc:
                return self._failed(run_id, exc, report, "growing the root file system failed: ")
        writer = writer_summary(report)
        if plan.firstboot_secret:
            try:
                writer.update(self._seed(run_id, path, plan.firstboot_secret))
            except Exception as exc:
                return self._failed(run_id, exc, report, "writing the first-boot credential failed: ")
        body = Report(self.cfg.token, True, None, verification(report), grow=grown, writer=writer,
                      transfer=self.transfer)  # fmt: skip
        answer = self.api.report(run_id, body)
        self.console.server(answer.screen)
        if answer.state == "hooks":  # verified: the server now runs the hooks over SSH; the PC stays up for them
            answer = self.wait_for_hooks(run_id)
        if answer.state == "done":
            self.console.show(stage="done", word=None, percent=100, reason=None, action=None)
            return Outcome(EXIT_DONE, "done", None, run_id)
        reason = answer.reason or f"server says {answer.state}"
        self.console.failed(reason, answer.screen)
        return Outcome(EXIT_FAILED, answer.state, reason, run_id)


def run_agent(cfg: AgentConfig, **kwargs: Any) -> Outcome:
    """Run the agent once; errors before a run exists (server unreachable, refused) become the outcome (and
    the screen says so)."""
    console = kwargs.pop("console", None) or Console(cfg.screen, mac=cfg.mac)
    try:
        return Agent(cfg, console=console, **kwargs).run_once()
    except ProvisionError as exc:
        log.error("%s: %s", cfg.mac, exc)
        outcome = Outcome(EXIT_FAILED, "failed", f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # a bug or an unforeseen OS error: still an outcome and a result line for /init
        log.exception("%s: the agent failed", cfg.mac)
        outcome = Outcome(EXIT_FAILED, "failed", f"{type(exc).__name__}: {exc}")
    if console.view.stage != "failed":
        console.failed(outcome.reason)
    return outcome
