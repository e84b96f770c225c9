"""Fuzz the agent API and every HTTP route of a real `provision serve` (127.0.0.1, port 0, one server for the module).

Bodies come from the wire's message classes (`provision.wire.api`, through tests/support/fuzz.py `bodies`):
valid-shaped, at and past each field's limits, one structural change, any JSON, deep nesting, NaN and 1e400,
lone surrogates as raw escapes, not JSON at all; sent with real credentials (a token fresh from a boot script,
a run with its own token, a first-boot secret) or made-up ones, so the fuzzer reaches past the token check.

Targets (docs/reliability.md, "Fuzzing"): ``api-hello``, ``api-firstboot``, ``api-runs`` (progress and report),
``api-get`` (GET and HEAD of every route with random path segments, and raw request lines). Every answer: status
below 500, within ANSWER_BOUND seconds, JSON answers strict JSON (no NaN/Infinity). After each target: /healthz
answers, the process runs, and its stderr holds no traceback.
"""

from __future__ import annotations

import http.client
import itertools
import json
import re
import signal
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import quote

import pytest
from hypothesis import strategies as st

from provision.facts import load_probe
from provision.images import ImageStore
from provision.wire import api
from tests.support import fuzz
from tests.support.images import CHUNK, MiB, make_disk
from tests.support.paths import SAMPLE_PROBE
from tests.support.serve import Running, start

NAME_MAX = 255  # bytes of a file name (Linux)
MAX_LINE = 8190  # aiohttp's longest request line
ANSWER_BOUND = 10.0  # seconds: every answer arrives within this, or the case fails
RECIPE = "name: default\ndefault: true\nimage: tiny\nwipe: zero\nhostname: \"pc-{{ serial or 'x' }}\"\n"
FACTS = load_probe(SAMPLE_PROBE).to_dict()


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes
    head: bool = False  # an answer to HEAD: headers only


@dataclass
class LiveRun:
    """A run the fuzzer started the way a PC does: boot script (token), hello with facts."""

    mac: str
    token: str
    run: str
    secret: str | None


class Output:
    """Drains one pipe of the server (so it never blocks on a full pipe) and keeps its tracebacks."""

    def __init__(self, pipe: IO[str]) -> None:
        self.lines = 0
        self.tail: list[str] = []
        self.tracebacks: list[str] = []
        self._current: list[str] | None = None
        self._thread = threading.Thread(target=self._drain, args=(pipe,), daemon=True)
        self._thread.start()

    def _drain(self, pipe: IO[str]) -> None:
        for line in pipe:
            self.lines += 1
            self.tail = [*self.tail[-40:], line.rstrip("\n")]
            if line.startswith("Traceback (most recent call last)"):
                self._current = [line]
            elif self._current is not None:
                self._current.append(line)
                if not line.startswith((" ", "\t")):  # the exception line ends it
                    self.tracebacks.append("".join(self._current[-60:]))
                    self._current = None

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


class Served:
    """The module's server: an HTTP client on one kept-alive connection, the drained output, real credentials."""

    def __init__(self, run: Running) -> None:
        self.run = run
        assert run.proc.stdout is not None and run.proc.stderr is not None
        self.stdout = Output(run.proc.stdout)
        self.stderr = Output(run.proc.stderr)
        self.port = run.ports["http"]
        self._conn: http.client.HTTPConnection | None = None
        self._macs = itertools.count(1)
        self.pool: list[LiveRun] = []
        self.known: list[LiveRun] = []  # every run started: machines the server knows, with their secrets
        self.target: fuzz.Target | None = None  # the target running, whose tally counts statuses

    # -- HTTP

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=ANSWER_BOUND)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Answer:
        """One request on the kept-alive connection (a new one if the server closed it: once, then it fails). An
        oversized request may see its connection reset instead of its 400 or 413 (the server closes it while the
        client still sends): status 0 then, which ``check`` accepts only for such a request."""
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(method, path, body=body, headers=headers or {})
                response = conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt == 2 and oversized(len(path), len(body or b"")):
                    return Answer(0, "", b"")
                if attempt == 2:
                    raise
                continue
            if response.will_close:
                self.close()
            return Answer(response.status, response.getheader("Content-Type") or "", data, method == "HEAD")
        raise AssertionError("unreachable")

    def raw(self, request: bytes) -> int:
        """A hand-written request on its own connection; the status of the answer (0: the server closed it, which
        only an oversized request may see)."""
        data = b""
        with socket.create_connection(("127.0.0.1", self.port), timeout=ANSWER_BOUND) as sock:
            try:
                sock.sendall(request)
                while b"\r\n" not in data and (chunk := sock.recv(4096)):
                    data += chunk
            except (BrokenPipeError, ConnectionResetError):
                pass
        if b"\r\n" not in data:
            assert oversized(len(request), 0), f"no answer to {request[:300]!r}"
            return 0
        found = re.match(rb"HTTP/1\.[01] (\d{3})", data)
        assert found is not None, data[:200]
        return int(found.group(1))

    # -- credentials, the way a PC gets them

    def fresh(self) -> tuple[str, str]:
        """A MAC the server never saw and the token of its first boot script."""
        n = next(self._macs)
        mac = "02:f0:" + ":".join(f"{(n >> s) & 255:02x}" for s in (24, 16, 8, 0))
        answer = self.request("GET", f"/boot/{mac}.ipxe")
        assert answer.status == 200, answer
        token = re.search(rb"provision\.token=([0-9a-f]+)", answer.body)
        assert token is not None, answer.body[:500]
        return mac, token.group(1).decode()

    def live_run(self) -> LiveRun:
        """An open run with its token: from the pool, or started now."""
        if self.pool:
            return self.pool[-1]
        mac, token = self.fresh()
        body = json.dumps({"mac": mac, "token": token, "facts": FACTS}).encode()
        answer = self.request("POST", "/api/v1/hello", body, {"Content-Type": "application/json"})
        assert answer.status == 200, answer
        found = json.loads(answer.body)
        assert found["action"] == "image", found
        run = LiveRun(mac, token, found["run"], found["plan"].get("firstboot_secret"))
        self.pool.append(run)
        self.known.append(run)
        return run

    def spend(self, run: LiveRun) -> None:
        if run in self.pool:
            self.pool.remove(run)

    # -- checks

    def check(self, answer: Answer, sent: object) -> None:
        """Status below 500; a JSON answer is strict JSON; a connection reset (status 0, an oversized request)
        leaves the server answering. The status is tallied for the current target."""
        if self.target is not None:
            self.target.tally[str(answer.status)] += 1
        if answer.status == 0:
            assert self.request("GET", "/healthz").status == 200, f"no answer after {str(sent)[:300]}"
            return
        assert answer.status < 500, f"{answer.status} for {str(sent)[:600]}: {answer.body[:600]!r}\n" + "\n".join(
            self.stderr.tail[-15:]
        )
        if answer.content_type.startswith("application/json") and not answer.head:
            json.loads(answer.body, parse_constant=_not_json)

    def healthy(self) -> None:
        """The process runs, /healthz answers, no traceback in its output so far."""
        assert self.run.proc.poll() is None, "\n".join(self.stderr.tail)
        health = self.request("GET", "/healthz")
        assert health.status == 200, health
        for route in ("/api/v1/machines", "/api/v1/runs"):
            self.check(self.request("GET", route), route)
        found = self.stderr.tracebacks + self.stdout.tracebacks
        kinds = sorted({t.strip().splitlines()[-1][:200] for t in found})
        assert not found, f"{len(found)} tracebacks in the server's output: {kinds}; the first:\n{found[0]}"


def oversized(line: int, body: int) -> bool:
    """A request past aiohttp's limits (request line, MAX_BODY): answered 400 or 413, or its connection reset."""
    return line > MAX_LINE - 20 or body > api.MAX_BODY


def _not_json(constant: str) -> Any:
    raise ValueError(f"the answer holds {constant}, which is not JSON")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("api-fuzz")
    recipes = tmp / "recipes"
    recipes.mkdir()
    (recipes / "default.yaml").write_text(RECIPE)
    images = ImageStore(tmp / "images")
    images.import_raw(make_disk(tmp / "d.raw", 4 * MiB, [(MiB, 200_000)], seed=7), "tiny", chunk_size=CHUNK)
    config = tmp / "provision.yaml"
    config.write_text(json.dumps({"recipes_dir": str(recipes), "image_store": str(tmp / "images")}))
    server = Served(start(tmp, "--config", str(config)))
    try:
        yield server
    finally:
        server.close()
        proc = server.run.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
        server.stdout.join(5)
        server.stderr.join(5)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


# --- what is sent --------------------------------------------------------------------------------------------

CONTENT_TYPES = [
    *["application/json"] * 12, "text/plain", "",
    "application/json; charset=latin-1", "application/json; charset=utf-16", "application/json; charset=utf-32",
    "application/json; charset=x-nope",
    "multipart/form-data; boundary=x", "application/x-www-form-urlencoded",
]  # fmt: skip


def headers_for(content_type: str) -> dict[str, str]:
    return {"Content-Type": content_type} if content_type else {}


def segments() -> st.SearchStrategy[str]:
    """One path segment as sent: quoted text, a MAC, a digest, traversal, or printable ASCII as it is."""
    printable = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)
    return st.one_of(
        fuzz.odd_text().map(lambda s: quote(s.encode("utf-8", "surrogatepass"), safe="")),
        fuzz.macs().map(lambda s: quote(s, safe=":%")),
        st.sampled_from(["current", "0" * 64, "a" * 64, "..", "%2e%2e", "..%2f..%2fetc%2fpasswd", "%00", "%",
                         "%zz", "%c0%ae", ".", "~", "tiny", "x" * 300, "x" * 5000]),
        printable.map(lambda s: s.replace("?", "%3F").replace("#", "%23")),
    )  # fmt: skip


ROUTES = [
    "/boot/{0}.ipxe", "/boot/{0}", "/boot/grub/hosts/{0}.cfg", "/boot/grub/{0}", "/images/{0}/{1}/index.json",
    "/images/{0}/{1}/disk.bmap", "/images/{0}/{1}/disk.img.zst", "/images/{0}", "/chunks/{0}",
    "/api/v1/machines/{0}/events", "/api/v1/runs/{0}", "/api/v1/runs?mac={0}", "/files/{0}", "/files/{0}/{1}",
    "/{0}", "/api/v1/{0}", "/healthz?{0}",
]  # fmt: skip


# --- the targets ---------------------------------------------------------------------------------------------


def test_fuzz_hello(served: Served) -> None:
    served.target = target = fuzz.target("api-hello", examples=500, budget=60, deadline=10, hang=60)

    @target.given(
        st.one_of(*[fuzz.json_bodies(api.Hello)] * 5, fuzz.raw_bodies()),
        st.sampled_from(["as-drawn", "fresh", "fresh", "fresh"]),
        st.one_of(st.none(), st.none(), st.just(FACTS), fuzz.mutated(FACTS)),
        st.booleans(),
        st.sampled_from(CONTENT_TYPES),
        st.sampled_from(["as-is"] * 48 + ["at the limit", "over the limit"]),
    )
    def case(value: Any, credential: str, facts: Any, ascii_only: bool, content_type: str, size: str) -> None:
        if isinstance(value, dict):
            if credential == "fresh":  # a real token, so the hello gets past the token check
                mac, token = served.fresh()
                value = {**value, **{k: v for k, v in (("mac", mac), ("token", token)) if k in value}}
            if facts is not None:
                value = {**value, "facts": facts}
        body = value if isinstance(value, bytes) else fuzz.encode(value, ensure_ascii=ascii_only)
        if size != "as-is":  # padded with white space to MAX_BODY bytes (still JSON), or one more (413)
            body += b" " * max(0, api.MAX_BODY - len(body) + (size == "over the limit"))
        served.check(served.request("POST", "/api/v1/hello", body, headers_for(content_type)), body[:2000])

    case()
    target.done()
    served.healthy()


def test_fuzz_firstboot(served: Served) -> None:
    served.target = target = fuzz.target("api-firstboot", examples=300, budget=45, deadline=10, hang=60)

    @target.given(
        st.one_of(*[fuzz.json_bodies(api.FirstBoot)] * 5, fuzz.raw_bodies()),
        st.sampled_from(["as-drawn", "known", "known-secret", "known-secret"]),
        st.booleans(),
        st.sampled_from(CONTENT_TYPES),
    )
    def case(value: Any, credential: str, ascii_only: bool, content_type: str) -> None:
        if isinstance(value, dict) and credential != "as-drawn":
            run = served.known[-1] if served.known else served.live_run()
            value = {**value, "mac": run.mac}
            if credential == "known-secret" and "secret" in value:
                value = {**value, "secret": run.secret}
        body = value if isinstance(value, bytes) else fuzz.encode(value, ensure_ascii=ascii_only)
        served.check(served.request("POST", "/api/v1/firstboot", body, headers_for(content_type)), body)

    case()
    target.done()
    served.healthy()


def run_ids() -> st.SearchStrategy[str]:
    return st.one_of(segments(), st.sampled_from(["0", "-1", "1" * 30, "00000000-0000-0000-0000-000000000000"]))


def test_fuzz_progress_and_report(served: Served) -> None:
    served.target = target = fuzz.target("api-runs", examples=600, budget=60, deadline=10, hang=60)

    def route_and_body(route: str) -> st.SearchStrategy[tuple[str, Any]]:
        kind = api.Progress if route == "progress" else api.Report
        return st.tuples(st.just(route), st.one_of(*[fuzz.json_bodies(kind)] * 5, fuzz.raw_bodies()))

    @target.given(
        st.sampled_from(["progress", "report"]).flatmap(route_and_body),
        run_ids(),
        st.sampled_from(["live", "live", "live", "other-token", "made-up"]),
        st.booleans(),
        st.sampled_from(CONTENT_TYPES),
    )
    def case(sent: tuple[str, Any], run_id: str, credential: str, ascii_only: bool, content_type: str) -> None:
        route, value = sent
        run: LiveRun | None = None
        if credential != "made-up":
            run = served.live_run()
            run_id = run.run
            if isinstance(value, dict) and "token" in value:
                value = {**value, "token": run.token if credential == "live" else served.fresh()[1]}
        body = value if isinstance(value, bytes) else fuzz.encode(value, ensure_ascii=ascii_only)
        answer = served.request("POST", f"/api/v1/runs/{run_id}/{route}", body, headers_for(content_type))
        served.check(answer, (run_id, body))
        if run is not None and (answer.status == 409 or (answer.status == 200 and route == "report")):
            served.spend(run)  # the run ended: the next case starts another

    case()
    target.done()
    served.healthy()


def test_fuzz_get_routes(served: Served) -> None:
    served.target = target = fuzz.target("api-get", examples=1000, budget=45, deadline=10, hang=60)

    @target.given(
        st.sampled_from(ROUTES), segments(), segments(), st.sampled_from(["GET", "GET", "HEAD"]), st.integers(0, 9)
    )
    def case(route: str, first: str, second: str, method: str, how: int) -> None:
        path = route.format(first, second)
        if how == 0:  # the request line by hand: bytes http.client would refuse to send
            raw = path.encode().replace(b"%20", b" ").replace(b"%00", b"\x00").replace(b"%FF", b"\xff")
            status = served.raw(method.encode() + b" " + raw + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            target.tally[f"raw {status}"] += 1
            assert status < 500, (status, raw[:300])
            return
        served.check(served.request(method, path), (method, path))

    case()
    target.done()
    served.healthy()


# --- what the fuzzers found: each a defect fixed since, kept as a regression test ------------------------------


def test_unknown_charset_is_a_400(served: Served) -> None:
    body = json.dumps({"mac": "52:54:00:12:34:56", "token": "0" * 32}).encode()
    answer = served.request("POST", "/api/v1/hello", body, {"Content-Type": "application/json; charset=x-nope"})
    assert answer.status == 400, answer


def test_files_long_name_is_not_a_500(served: Served) -> None:
    answer = served.request("GET", "/files/" + "x" * (NAME_MAX + 1))
    assert answer.status in (400, 404), answer


def test_firstboot_secret_with_a_lone_surrogate_is_a_4xx(served: Served) -> None:
    run = served.known[-1] if served.known else served.live_run()
    call = {"event": "firstboot", "mac": run.mac, "image": "tiny", "label": "L", "secret": "\ud800"}
    answer = served.request("POST", "/api/v1/firstboot", fuzz.encode(call), {"Content-Type": "application/json"})
    assert 400 <= answer.status < 500, answer


def test_report_extras_with_nan_keep_the_events_json(served: Served) -> None:
    run = served.live_run()
    body = {"token": run.token, "ok": False, "reason": "x", "writer": {"rate": fuzz.Raw("NaN")},
            "error": {"e": fuzz.Raw("-Infinity")}}  # fmt: skip
    answer = served.request("POST", f"/api/v1/runs/{run.run}/report", fuzz.encode(body))
    served.spend(run)
    assert answer.status == 400, answer  # NaN and infinities are not JSON: refused when the body is read
    events = served.request("GET", f"/api/v1/machines/{run.mac}/events")
    served.check(events, "events")  # strict JSON
