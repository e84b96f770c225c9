"""The server's verdict on an image run's final report: the run ends ``done`` (or goes on to its hooks) only
with a complete read-back of the planned digest, counted against the server's own index; anything else ends
it ``failed`` with every reason in plain words.

``report_problems`` is the rule (pure: a run, a report, the index's count); ``Verdict.judge`` applies it to
the store (the verification recorded, the verified bytes kept for the delta figures, the state moved on).
The agent's own figures are never taken on trust: its chunk count is checked against the image version the
server stored.
"""

from __future__ import annotations

import logging

from provision.images import ImageError, ImageStore
from provision.states import RunState
from provision.store import Run, Store
from provision.wire.api import Report, VerificationReport

log = logging.getLogger(__name__)


def report_problems(run: Run, report: Report, data_chunks: int | str | None = None) -> list[str]:
    """Why a report does not make the run done (empty: it does). ``data_chunks``: the number of data chunks
    of the run's image version per the server's own index (the agent's count is not taken on trust), or why
    that index cannot be read (then the run cannot be done)."""
    problems = []
    if isinstance(data_chunks, str):
        problems.append(data_chunks)
        data_chunks = None
    if not report.ok:
        problems.append(f"agent reports failure: {report.reason or 'no reason given'}")
    body = report.report
    if body is None:
        return [*problems, "no verification in the report"]
    if body.digest != run.digest:
        problems.append(f"wrote digest {body.digest[:64]}, the run planned {run.digest}")
    if data_chunks is not None and body.chunks != data_chunks:
        problems.append(f"report counts {body.chunks} data chunks, the image has {data_chunks}")
    if body.chunks <= 0 or body.verified != body.chunks:
        problems.append(f"verified {body.verified} of {body.chunks} chunks")
    if not body.read_back_ok:
        problems.append("read-back failed")
    return problems


class Verdict:
    """Judges verified reports over a store and (when the server has one) an image store."""

    def __init__(self, store: Store, images: ImageStore | None) -> None:
        self.store = store
        self.images = images

    def data_chunks(self, run: Run) -> int | str | None:
        """The number of data chunks of the run's image version, from the server's index; the reason when
        that version cannot be loaded (a report is then not trusted); None when the server has no store."""
        if self.images is None:
            return None
        try:
            index = self.images.load(run.image, run.digest).index
        except (ImageError, OSError) as exc:
            return f"image version {run.image}@{run.digest[:12]} cannot be loaded to check the report: {exc}"
        return len(index.chunks) - index.holes

    def judge(self, run: Run, msg: Report, body: VerificationReport, runs_hooks: bool) -> Run:
        """Record ``body`` and move the run on: to ``hooks`` when verified and its plan has hooks this server
        runs (``runs_hooks``), else ``done`` (with a note when hooks were planned but not run), or ``failed``
        with every problem of ``report_problems``."""
        self.store.record_verification(run.id, body)
        problems = report_problems(run, msg, self.data_chunks(run))
        if not problems and self.images is not None:  # the data bytes read back right, per the server's index
            try:
                verified = self.images.load(run.image, run.digest).index.mapped_bytes
            except (ImageError, OSError) as exc:  # read just before by data_chunks: only a race with retention
                log.warning("%s: run %s: verified bytes not recorded: %s", run.mac, run.id, exc)
            else:
                self.store.record_delta(run.id, fetched=None, verified=verified, target=None)
        if not problems and run.state is RunState.INVENTORIED:  # no progress reached us (a short write)
            run = self.store.set_run_state(run.id, RunState.WRITING)
        if not problems and run.state is RunState.WRITING:  # the report carries the read-back itself
            run = self.store.set_run_state(run.id, RunState.VERIFYING)
        state, reason = RunState.FAILED, "; ".join(problems)
        if not problems and run.state in (RunState.VERIFYING, RunState.HOOKS):
            hooks = (self.store.run_plan(run.id) or {}).get("hooks") or []
            if hooks and runs_hooks:  # verified: the hooks run now, then the run ends
                state, reason = RunState.HOOKS, ""
            else:
                state, reason = RunState.DONE, "hooks not run: this server runs no hooks" if hooks else ""
        elif not problems:
            reason = f"report arrived in state {run.state.value}, before verification"
        return self.store.set_run_state(
            run.id, state, reason or None, bytes_written=body.bytes_written, mean_rate=body.mean_rate
        )
