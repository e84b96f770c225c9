"""The agent API, version 1: typed, validated payloads; a bad payload is a 4xx with the reason."""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any, Literal, TypeVar

from aiohttp import web
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from provision.errors import ProbeError
from provision.facts import Facts
from provision.macaddr import BadMac, normalize_mac
from provision.runs import FINAL_RUN_STATES, FinalReport, Run, RunError, Runs, RunState
from provision.store import MachineState, Store

log = logging.getLogger(__name__)

STORE: web.AppKey[Store] = web.AppKey("store", Store)
RUNS: web.AppKey[Runs] = web.AppKey("runs", Runs)
MAX_BODY = 4 << 20


def _normal_mac(value: str) -> str:
    try:
        return normalize_mac(value)
    except BadMac as exc:
        raise ValueError(str(exc)) from None


Mac = Annotated[str, AfterValidator(_normal_mac)]


class BootInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    firmware: Literal["uefi", "bios", "unknown"] = "unknown"
    secure_boot: bool | None = None
    kernel: str | None = Field(default=None, max_length=200)


PROBE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_PROBE_FILES = 64


def _utf8(text: str) -> str:
    """Lone surrogates (valid JSON escapes, not encodable) replaced: the text goes to files and SQLite."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _probe_files(value: dict[str, str]) -> dict[str, str]:
    if len(value) > MAX_PROBE_FILES:
        raise ValueError(f"at most {MAX_PROBE_FILES} probe files")
    bad = [name for name in value if not PROBE_NAME.fullmatch(name)]
    if bad:
        raise ValueError(f"bad probe file names: {', '.join(repr(n[:80]) for n in bad[:5])}")
    return {name: _utf8(text) for name, text in value.items()}


class Hello(BaseModel):
    """``probe``: the raw files the live environment collected (dmidecode.txt, lspci.txt, lsblk.json ...),
    kept by the server and read by provision.facts; ``facts``: already parsed facts (tests, other agents)."""

    model_config = ConfigDict(extra="forbid")
    mac: Mac
    token: str = Field(min_length=8, max_length=128)
    boot: BootInfo = Field(default_factory=BootInfo)
    facts: dict[str, Any] | None = None
    probe: Annotated[dict[str, str], AfterValidator(_probe_files)] | None = None
    warnings: list[Annotated[str, Field(max_length=500), AfterValidator(_utf8)]] = Field(
        default_factory=list, max_length=100
    )


def _error(status: int, reason: str, **extra: Any) -> web.Response:
    return web.json_response({"error": reason, **extra}, status=status)


async def _payload(request: web.Request) -> tuple[dict[str, Any] | None, web.Response | None]:
    if request.content_length is not None and request.content_length > MAX_BODY:
        return None, _error(413, f"payload over {MAX_BODY} bytes")
    try:
        data = await request.json()
    except ValueError as exc:
        return None, _error(400, f"body is not JSON: {exc}")
    if not isinstance(data, dict):
        return None, _error(400, "body must be a JSON object")
    return data, None


def _validation(exc: ValidationError) -> web.Response:
    problems = [
        {"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]} for err in exc.errors(include_url=False)
    ]
    return _error(422, "invalid payload", problems=problems)


async def hello(request: web.Request) -> web.Response:
    """The live environment's first call: who it is (MAC + per-boot token), how it booted, its facts."""
    store = request.app[STORE]
    data, bad = await _payload(request)
    if bad is not None:
        return bad
    try:
        msg = Hello.model_validate(data)
    except ValidationError as exc:
        return _validation(exc)
    if not store.check_token(msg.mac, msg.token):
        log.warning("%s: hello refused: wrong or expired boot token (from %s)", msg.mac, request.remote)
        return _error(403, "wrong or expired boot token", mac=msg.mac)
    store.mark_token_used(msg.token)
    detail: dict[str, Any] = {"boot": msg.boot.model_dump(), "remote": request.remote}
    if msg.warnings:
        detail["probe_warnings"] = msg.warnings
    store.event(msg.mac, "hello", detail)
    facts: dict[str, Any] | Facts | None = msg.facts
    if msg.probe is not None:
        try:
            facts = request.app[RUNS].save_probe(msg.mac, msg.probe)
        except (ProbeError, OSError) as exc:
            log.error("%s: probe not kept: %s", msg.mac, exc)
            return _error(422 if isinstance(exc, ProbeError) else 500, f"probe not readable: {str(exc)[:300]}")
    if facts is not None:
        try:
            answer = request.app[RUNS].hello(msg.mac, facts)
        except (ValueError, TypeError, AttributeError) as exc:
            return _error(422, f"facts do not read: {str(exc)[:300]}")
        log.info("%s: hello with facts: %s", msg.mac, answer["action"])
        return web.json_response(answer)
    machine = store.machine(msg.mac)
    if machine is not None and machine.state is MachineState.NEW:
        store.set_state(msg.mac, MachineState.WAITING, "live environment up, no imaging plan yet")
    log.info("%s: hello: firmware %s, secure boot %s", msg.mac, msg.boot.firmware, msg.boot.secure_boot)
    return web.json_response({"action": "wait", "reason": "imaging plans are not served yet", "retry_after": 30})


class FirstBoot(BaseModel):
    """An imaged machine's installed system reporting its first (or a later) boot from its own disk."""

    model_config = ConfigDict(extra="forbid")
    event: Literal["firstboot", "boot"]
    mac: Mac
    image: str = Field(max_length=64)
    label: str = Field(max_length=128)
    firmware: Literal["uefi", "bios", "unknown"] = "unknown"
    secure_boot: bool | None = None
    machine_id: str | None = Field(default=None, max_length=64)


async def firstboot(request: web.Request) -> web.Response:
    """Recorded as an event of the machine. No boot token exists on an installed system: this call can
    only add an event, never change a machine's state or plan."""
    store = request.app[STORE]
    data, bad = await _payload(request)
    if bad is not None:
        return bad
    try:
        msg = FirstBoot.model_validate(data)
    except ValidationError as exc:
        return _validation(exc)
    store.seen(msg.mac)
    store.event(msg.mac, msg.event, {**msg.model_dump(exclude={"mac", "event"}), "remote": request.remote})
    log.info("%s: %s of %s (%s, secure boot %s)", msg.mac, msg.event, msg.label, msg.firmware, msg.secure_boot)
    return web.json_response({"ok": True})


async def machines(request: web.Request) -> web.Response:
    store = request.app[STORE]
    return web.json_response([m.to_dict() for m in store.machines()])


async def machine_events(request: web.Request) -> web.Response:
    store = request.app[STORE]
    try:
        mac = normalize_mac(request.match_info["mac"])
    except BadMac as exc:
        return _error(400, str(exc))
    events = store.events(mac)
    return web.json_response([{"id": e.id, "at": e.at, "kind": e.kind, "detail": e.detail} for e in events])


# ------------------------------------------------------------------------------------------------ runs
M = TypeVar("M", bound=BaseModel)
Digest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Token = Annotated[str, Field(min_length=8, max_length=128)]


class Progress(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: Token
    stage: Literal["writing", "verifying"]
    bytes_done: int = Field(ge=0)
    bytes_total: int = Field(ge=0)
    rate: float = Field(ge=0)


class ReportBody(BaseModel):
    """What the agent verified: ``chunks``/``verified`` count data chunks, ``holes``/``holes_verified`` holes."""

    model_config = ConfigDict(extra="forbid")
    digest: Digest
    chunks: int = Field(ge=0)
    verified: int = Field(ge=0)
    holes: int = Field(default=0, ge=0)
    holes_verified: int = Field(default=0, ge=0)
    read_back_ok: bool
    wipe_method: str | None = Field(default=None, max_length=64)
    wipe_ranges: list[tuple[int, int]] = Field(default_factory=list, max_length=100_000)
    bytes_written: int = Field(ge=0)
    seconds: float = Field(ge=0)
    mean_rate: float = Field(ge=0)


class Report(BaseModel):
    """The end of a run: ``ok`` with the verification ``report``, or not ok with the ``reason`` (and the
    report when the write got as far as a verification). ``error``: the failure's type and facts;
    ``grow``: what growing the root file system did; ``writer``: the writer's figures (chunks fetched and
    skipped, incidents, I/O mode); all three are kept as events."""

    model_config = ConfigDict(extra="forbid")
    token: Token
    ok: bool
    reason: Annotated[str, Field(max_length=2000), AfterValidator(_utf8)] | None = None
    report: ReportBody | None = None
    error: dict[str, Any] | None = None
    grow: dict[str, Any] | None = None
    writer: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _complete(self) -> Report:
        if self.ok and self.report is None:
            raise ValueError("a successful report needs the verification (report)")
        if not self.ok and not self.reason:
            raise ValueError("a failure needs a reason")
        return self


def _run_dict(store: Store, run: Run) -> dict[str, Any]:
    return {**run.to_dict(), "verifications": [v.to_dict() for v in store.verifications(run.id)]}


async def _run_call(request: web.Request, model: type[M]) -> tuple[M, Run] | web.Response:
    """The payload, validated, and the run it names, bound to the boot token's MAC."""
    store = request.app[STORE]
    run = store.run(request.match_info["run"])
    if run is None:
        return _error(404, "no such run")
    data, bad = await _payload(request)
    if bad is not None:
        return bad
    try:
        msg = model.model_validate(data)
    except ValidationError as exc:
        return _validation(exc)
    if not store.check_token(run.mac, str(getattr(msg, "token", ""))):
        log.warning("%s: run %s call refused: wrong or expired boot token (from %s)", run.mac, run.id, request.remote)
        return _error(403, "wrong or expired boot token", run=run.id)
    if run.state in FINAL_RUN_STATES:
        return _error(409, f"run is {run.state.value} already", run=run.id, state=run.state.value)
    return msg, run


async def run_progress(request: web.Request) -> web.Response:
    got = await _run_call(request, Progress)
    if isinstance(got, web.Response):
        return got
    msg, run = got
    try:
        run = request.app[RUNS].progress(run, RunState(msg.stage), msg.bytes_done, msg.bytes_total, msg.rate)
    except RunError as exc:
        return _error(409 if exc.conflict else 422, str(exc), run=run.id)
    return web.json_response({"ok": True, "run": run.id, "state": run.state.value})


async def run_report(request: web.Request) -> web.Response:
    got = await _run_call(request, Report)
    if isinstance(got, web.Response):
        return got
    msg, run = got
    body = msg.report
    runs = request.app[RUNS]
    for kind, extra in (("write", msg.writer), ("grow", msg.grow)):
        if extra is not None:
            request.app[STORE].event(run.mac, kind, {"run": run.id, **extra})
    if body is None:
        try:
            run = runs.fail(run, msg.reason or "no reason given", {"error": msg.error} if msg.error else None)
        except RunError as exc:  # the run ended meanwhile (e.g. superseded by a new hello)
            return _error(409, str(exc), run=run.id, state=run.state.value)
        log.info("%s: run %s failed: %s", run.mac, run.id, run.reason)
        return web.json_response({"run": run.id, "state": run.state.value, "reason": run.reason})
    if msg.error is not None:
        request.app[STORE].event(run.mac, "run-error", {"run": run.id, "error": msg.error})
    final = FinalReport(
        ok=msg.ok,
        reason=msg.reason,
        digest=body.digest,
        chunks=body.chunks,
        verified=body.verified,
        read_back_ok=body.read_back_ok,
        wipe_method=body.wipe_method,
        wipe_ranges=[list(r) for r in body.wipe_ranges],
        bytes_written=body.bytes_written,
        seconds=body.seconds,
        mean_rate=body.mean_rate,
        holes=body.holes,
        holes_verified=body.holes_verified,
    )
    try:
        run = runs.report(run, final)
    except RunError as exc:
        return _error(409 if exc.conflict else 422, str(exc), run=run.id)
    log.info("%s: run %s %s%s", run.mac, run.id, run.state.value, f": {run.reason}" if run.reason else "")
    return web.json_response({"run": run.id, "state": run.state.value, "reason": run.reason})


async def list_runs(request: web.Request) -> web.Response:
    store = request.app[STORE]
    mac: str | None = None
    if "mac" in request.query:
        try:
            mac = normalize_mac(request.query["mac"])
        except BadMac as exc:
            return _error(400, str(exc))
    return web.json_response([_run_dict(store, r) for r in store.runs(mac)])


async def get_run(request: web.Request) -> web.Response:
    store = request.app[STORE]
    run = store.run(request.match_info["run"])
    if run is None:
        return _error(404, "no such run")
    return web.json_response(_run_dict(store, run))
