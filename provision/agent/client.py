"""The agent's side of the server API (version 1): hello, progress, report, the erasure report and its
progress, the multicast carousel's join, keepalive and leave, and a capture's offers, chunk uploads and end.

Every call carries the MAC and the per-boot token. ``hello``, ``report`` and ``erasure`` are retried with
backoff while the server is unreachable or answers 5xx (a workshop server restarting takes seconds), up to a
deadline; a 4xx answer is final (``ApiRefused``, with the server's reason). A capture's offer, upload (a PUT
of one zstd frame) and end are retried the same way. Progress goes through
``ProgressPoster`` (the write) and ``ErasurePoster`` (the erasure): a background thread posting the latest
value, so a slow or absent server never slows the writer or the drives.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import requests

from provision.agent.errors import AgentError, ServerUnreachable
from provision.errors import InvalidPayload, ProvisionError
from provision.wire import paths
from provision.wire.api import ANSWERS, BootInfo, Hello, HelloAnswer, Progress, Report, RunAnswer, Screen, Stage
from provision.wire.capture import TOKEN_HEADER, CaptureDone, CaptureOffer, CaptureOfferAnswer, CaptureUploadAnswer
from provision.wire.carousel import MulticastAnswer, MulticastCall
from provision.wire.erasure import ErasureProgress, ErasureReport
from provision.wire.schema import Message

log = logging.getLogger(__name__)

__all__ = ["ApiRefused", "ErasurePoster", "ProgressPoster", "ServerApi"]

T = TypeVar("T")
M = TypeVar("M", bound=Message)
DONE_TIMEOUT = 3600.0  # seconds for a capture's end: the server reads every chunk back before it answers


class ApiRefused(AgentError):
    """The server refused a call with a 4xx answer (wrong token, bad payload, run finished already)."""

    def __init__(self, path: str, status: int, reason: str, method: str = "POST") -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {reason}", path=path, status=status, reason=reason)
        self.path, self.status, self.reason = path, status, reason


def _text_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def screen_of(answer: Mapping[str, Any]) -> Screen | None:
    """The ``screen`` of a server's answer (what its dashboard tile shows), None when absent or malformed: the
    screen is for the PC's console and never fails a call."""
    value = answer.get("screen")
    if not isinstance(value, Mapping):
        return None
    try:
        return Screen.from_dict(value)
    except InvalidPayload as exc:
        log.warning("the server's screen does not read (%s); not shown", exc.problems[:3])
        return None


def _reason(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict):
        problems = body.get("problems")
        text = str(body.get("error", body))
        if isinstance(problems, list) and problems:
            text += ": " + "; ".join(str(p) for p in problems[:5])
        return text[:600]
    return str(body)[:300]


class ServerApi:
    """Calls to one server for one boot (``mac`` + ``token``)."""

    def __init__(
        self,
        server: str,
        mac: str,
        token: str,
        *,
        session: requests.Session | None = None,
        deadline: float = 600.0,
        timeout: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.server = server.rstrip("/")
        self.mac = mac
        self.token = token
        self.session = session or requests.Session()
        self.deadline = deadline
        self.timeout = timeout
        self._sleep = sleep
        self._clock = clock
        self._rng = random.Random()  # nosec B311  # noqa: S311 (backoff jitter)

    def post(self, path: str, body: Mapping[str, Any], *, retry: bool = True) -> dict[str, Any]:
        """POST JSON and return the JSON answer. Transient failures are retried until the deadline, then
        ``ServerUnreachable``; a 4xx answer raises ``ApiRefused``."""
        return self._send("POST", path, retry=retry, json=dict(body))

    def put(self, path: str, data: bytes, headers: Mapping[str, str], *, retry: bool = True) -> dict[str, Any]:
        """PUT a raw body (with ``headers``) and return the JSON answer; retried and refused like ``post``."""
        return self._send("PUT", path, retry=retry, data=data, headers=dict(headers))

    def _send(
        self, method: str, path: str, *, retry: bool, timeout: float | None = None, **request: Any
    ) -> dict[str, Any]:
        url = f"{self.server}{path}"
        call = self.session.post if method == "POST" else self.session.put
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                response = call(url, timeout=(10.0, timeout or self.timeout), **request)
            except requests.RequestException as exc:
                detail = f"{type(exc).__name__}: {str(exc)[:200]}"
            else:
                if response.status_code < 300:
                    try:
                        answer = response.json()
                    except ValueError:
                        answer = None
                    if isinstance(answer, dict):
                        return answer
                    detail = f"HTTP {response.status_code} with a body that is not a JSON object"
                elif response.status_code < 500:
                    raise ApiRefused(path, response.status_code, _reason(response), method)
                else:
                    detail = f"HTTP {response.status_code}: {_reason(response)}"
            waited = self._clock() - started
            if not retry or waited >= self.deadline:
                raise ServerUnreachable(url, attempt, waited, detail)
            delay = min(self._rng.uniform(0.5, 1.0) * min(10.0, 0.5 * 2 ** min(attempt - 1, 10)), 30.0)
            if attempt == 1 or attempt % 10 == 0:
                log.warning("%s: POST %s: %s (attempt %d, retrying in %.1f s)", self.mac, path, detail, attempt, delay)
            self._sleep(delay)

    def hello(
        self, boot: BootInfo, probe: Mapping[str, str], warnings: list[str], host_key: str | None = None
    ) -> HelloAnswer:
        """The hello with the probe (and the SSH host key the server pins); the server's answer, checked (an
        unknown action is an AgentError). The hello asks for the PC's ``screen``; one that does not read is
        left out (the answer stands)."""
        body = Hello(
            self.mac,
            self.token,
            boot,
            None,
            dict(probe),
            [w[:500] for w in warnings[:100]],
            host_key,
            screen=True,
            delta=True,
            capture=True,
        )
        answer = self.post(paths.HELLO, body.to_dict())
        kind = ANSWERS.get(str(answer.get("action")))
        if kind is None:
            raise AgentError(f"the server answered an unknown action {str(answer.get('action'))[:40]!r}", answer=answer)
        screen = screen_of(answer)
        try:
            found = kind.from_dict({k: v for k, v in answer.items() if k != "screen"})
        except InvalidPayload as exc:
            raise AgentError(f"the server's {kind.__name__} does not read: {exc.problems[:5]}", answer=answer) from None
        return dataclasses.replace(found, screen=screen)

    def progress(self, run: str, stage: Stage, done: int, total: int, rate: float) -> Screen | None:
        """Post one progress report; the screen of the server's answer."""
        body = Progress(self.token, stage, done, total, max(rate, 0.0))
        return screen_of(self.post(paths.run_progress(run), body.to_dict(), retry=False))

    def report(self, run: str, report: Report) -> RunAnswer:
        """The run's final report. A 409 (the run is final already: an earlier attempt of this report got
        through but its answer was lost, or the run was superseded) answers with the recorded state."""
        return self._run_answer(run, paths.run_report(run), report.to_dict())

    def erasure(self, run: str, report: ErasureReport) -> RunAnswer:
        """Every drive's erasure record; the server answers the run's state: ``writing`` (an image run whose
        drives are all erased: go on), ``done`` (an erase-only run), ``repair`` or ``failed`` with the reason.
        Retried like the report; a 409 answers with the recorded state."""
        return self._run_answer(run, paths.run_erasure(run), report.to_dict())

    def _run_answer(self, run: str, path: str, body: Mapping[str, Any]) -> RunAnswer:
        try:
            answer = self.post(path, body)
        except ApiRefused as exc:
            if exc.status != 409:
                raise
            return self._recorded(run, path)
        return RunAnswer(run, str(answer.get("state")), _text_or_none(answer.get("reason")), screen_of(answer))

    def _recorded(self, run: str, path: str) -> RunAnswer:
        """The run's recorded state, after a 409 answer to ``path`` (the run was final already)."""
        recorded = self.get(paths.run(run))
        log.warning("%s: run %s was %s already when %s was posted", self.mac, run, recorded.get("state"), path)
        return RunAnswer(run, str(recorded.get("state")), _text_or_none(recorded.get("reason")))

    def erasure_progress(self, run: str, progress: ErasureProgress) -> Screen | None:
        """Post one erasure progress report (each drive's fraction); the screen of the server's answer."""
        return screen_of(self.post(paths.run_erasure_progress(run), progress.to_dict(), retry=False))

    def multicast(self, run: str, call: MulticastCall) -> MulticastAnswer:
        """A join, keepalive or leave of the run's carousel (one attempt: the listener never waits for the
        server); ServerUnreachable, ApiRefused, or InvalidPayload for an answer that does not read."""
        return MulticastAnswer.from_dict(self.post(paths.run_multicast(run), call.to_dict(), retry=False))

    def offer(self, run: str, offer: CaptureOffer) -> CaptureOfferAnswer:
        """A capture's next chunks; the sha256s the server wants uploaded."""
        return _read(CaptureOfferAnswer, self.post(paths.run_capture_offer(run), offer.to_dict()))

    def upload(self, run: str, sha256: str, frame: bytes) -> CaptureUploadAnswer:
        """One chunk the server asked for, as one zstd frame, with the boot token in its header."""
        answer = self.put(paths.run_capture_chunk(run, sha256), frame, {TOKEN_HEADER: self.token})
        return _read(CaptureUploadAnswer, answer)

    def done(self, run: str, done: CaptureDone) -> RunAnswer:
        """A capture's end: the server checks and publishes the version (it reads every chunk back first: a long
        wait) and answers the run's state; a 409 answers with the recorded state, like the report."""
        path = paths.run_capture_done(run)
        try:
            answer = self._send("POST", path, retry=True, timeout=DONE_TIMEOUT, json=done.to_dict())
        except ApiRefused as exc:
            if exc.status != 409:
                raise
            return self._recorded(run, path)
        return RunAnswer(run, str(answer.get("state")), _text_or_none(answer.get("reason")), screen_of(answer))

    def get(self, path: str) -> dict[str, Any]:
        """GET JSON (one attempt); ServerUnreachable or ApiRefused on failure."""
        url = f"{self.server}{path}"
        try:
            response = self.session.get(url, timeout=(10.0, self.timeout))
            answer = response.json() if response.status_code < 300 else None
        except (requests.RequestException, ValueError) as exc:
            raise ServerUnreachable(url, 1, 0.0, f"{type(exc).__name__}: {str(exc)[:200]}") from None
        if not isinstance(answer, dict):
            raise ApiRefused(path, response.status_code, _reason(response))
        return answer


def _read(kind: type[M], answer: dict[str, Any]) -> M:
    """The server's answer as ``kind`` (a wire message); one that does not read is an AgentError."""
    try:
        return kind.from_dict(answer)
    except InvalidPayload as exc:
        raise AgentError(f"the server's {kind.__name__} does not read: {exc.problems[:5]}", answer=answer) from None


class LatestPoster(Generic[T]):
    """Posts the latest value of a run from a background thread with ``send``; values that arrive while a
    post is in flight replace each other (only the newest matters). Failures are logged, never raised.
    ``answered`` gets the screen of each answer that has one (from the poster's thread)."""

    def __init__(
        self,
        api: ServerApi,
        run: str,
        send: Callable[[T], Screen | None],
        answered: Callable[[Screen], None] | None = None,
    ) -> None:
        self._api = api
        self._send = send
        self._answered = answered
        self._lock = threading.Lock()
        self._pending: T | None = None
        self._wake = threading.Event()
        self._stop = False
        self.posted = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._loop, name=f"progress-{run[:8]}", daemon=True)
        self._thread.start()

    def put(self, value: T) -> None:
        with self._lock:
            self._pending = value
        self._wake.set()

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            with self._lock:
                self._wake.clear()
                item, self._pending = self._pending, None
                stop = self._stop
            if item is not None:
                try:
                    screen = self._send(item)
                    self.posted += 1
                    if screen is not None and self._answered is not None:
                        self._answered(screen)
                except ProvisionError as exc:
                    self.failed += 1
                    if self.failed == 1 or self.failed % 20 == 0:
                        log.warning("%s: progress not posted (%d so far): %s", self._api.mac, self.failed, exc)
            if stop:
                if not self._has_pending():
                    return
                self._wake.set()

    def _has_pending(self) -> bool:
        with self._lock:
            return self._pending is not None

    def close(self, timeout: float = 10.0) -> None:
        """Post what is pending, then stop the thread."""
        with self._lock:
            self._stop = True
        self._wake.set()
        self._thread.join(timeout)


class ProgressPoster(LatestPoster[tuple[Stage, int, int, float]]):
    """The write's progress (stage, bytes done, bytes in all, rate), latest first."""

    def __init__(self, api: ServerApi, run: str, answered: Callable[[Screen], None] | None = None) -> None:
        super().__init__(api, run, lambda item: api.progress(run, *item), answered)

    def submit(self, stage: Stage, done: int, total: int, rate: float) -> None:
        self.put((stage, done, total, rate))


class ErasurePoster(LatestPoster[ErasureProgress]):
    """The erasure's progress (each drive's fraction), latest first."""

    def __init__(self, api: ServerApi, run: str, answered: Callable[[Screen], None] | None = None) -> None:
        super().__init__(api, run, lambda item: api.erasure_progress(run, item), answered)
