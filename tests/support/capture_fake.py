"""A fake capture server for the agent's capture step (unit tests): a ``requests.Session`` whose ``post`` and
``put`` answer the capture's offer, chunk upload and done (provision.wire.capture) from memory, as the real
server's rules say, with faults scripted.

- ``CaptureServer(held=...)``: the store's chunks (sha256 -> plain bytes) before the capture. An offer records its
  positions (in order: a gap or an overlap is a 409) and answers the sha256s neither held nor asked for before;
  an upload must carry the boot token, decode to a chunk of the offered sha256 that was asked for; done checks
  every position was offered and every data chunk is held, and the disk's sha256 (positions in order, holes as
  zeros) is the agent's.
- ``upload_faults``: status codes the next uploads get, one per upload (0: served; 503 is retried by the client,
  4xx not).
- ``on_offer``: called with each offer's body before it is answered (a test writes on the disk there).
- ``hello(answer)``: the hello's answer; ``reports``: the reports posted (a failed run's).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
import zstandard

SERVER = "http://capture.test:8080"
TOKEN = "t" * 32
MAC = "52:54:00:12:34:56"


def response(status: int, body: object) -> requests.Response:
    answer = requests.Response()
    answer.status_code = status
    answer._content = json.dumps(body).encode()
    return answer


@dataclass
class CaptureServer(requests.Session):
    chunk_size: int = 65536
    held: dict[str, bytes] = field(default_factory=dict)
    hello_answer: dict[str, Any] = field(default_factory=dict)
    upload_faults: list[int] = field(default_factory=list)
    on_offer: Callable[[dict[str, Any]], None] | None = None
    done_state: str = "done"
    positions: list[str | None] = field(default_factory=list)
    asked: set[str] = field(default_factory=set)
    offers: list[dict[str, Any]] = field(default_factory=list)
    uploads: list[str] = field(default_factory=list)
    frames: int = 0  # compressed bytes uploaded
    in_flight: int = 0
    most_in_flight: int = 0
    dones: list[dict[str, Any]] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)
    hellos: list[dict[str, Any]] = field(default_factory=list)
    progress: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        super().__init__()

    def post(self, url: str | bytes, data: Any = None, json: Any = None, **kw: Any) -> requests.Response:
        path = str(url).split("/api/v1", 1)[1]
        body: dict[str, Any] = json
        if path == "/hello":
            self.hellos.append(body)
            return response(200, self.hello_answer)
        if path.endswith("/progress"):
            with self.lock:
                self.progress.append(body)
            return response(200, {"ok": True})
        if path.endswith("/capture/offer"):
            return self._offer(body)
        if path.endswith("/capture/done"):
            return self._done(body)
        if path.endswith("/report"):
            self.reports.append(body)
            return response(200, {"run": "r1", "state": "failed", "reason": body.get("reason")})
        return response(404, {"error": f"no route {path}"})

    def _offer(self, body: dict[str, Any]) -> requests.Response:
        if body["token"] != TOKEN:
            return response(403, {"error": "bad token"})
        if self.on_offer is not None:
            self.on_offer(body)
        with self.lock:
            if body["first"] != len(self.positions):
                return response(409, {"error": f"offer at {body['first']}, {len(self.positions)} recorded"})
            self.offers.append(body)
            self.positions.extend(body["chunks"])
            missing = [s for s in dict.fromkeys(body["chunks"]) if s and s not in self.held and s not in self.asked]
            self.asked.update(missing)
            return response(200, {"missing": missing, "offered": len(self.positions)})

    def put(self, url: str | bytes, data: Any = None, **kw: Any) -> requests.Response:
        sha = str(url).rsplit("/", 1)[1]
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            fault = self.upload_faults.pop(0) if self.upload_faults else None
        try:
            if fault:
                return response(fault, {"error": f"scripted {fault}"})
            if kw.get("headers", {}).get("X-Provision-Token") != TOKEN:
                return response(403, {"error": "bad token"})
            plain = zstandard.ZstdDecompressor().decompress(data, max_output_size=self.chunk_size)
            if hashlib.sha256(plain).hexdigest() != sha or sha not in self.asked:
                return response(400, {"error": "not the chunk asked for"})
            with self.lock:
                new = sha not in self.held
                self.held[sha] = plain
                self.uploads.append(sha)
                self.frames += len(data)
            return response(200, {"sha256": sha, "new": new, "stored_bytes": len(data)})
        finally:
            with self.lock:
                self.in_flight -= 1

    def _done(self, body: dict[str, Any]) -> requests.Response:
        self.dones.append(body)
        whole = hashlib.sha256()
        for i, sha in enumerate(self.positions):
            length = min(self.chunk_size, body["disk_size"] - i * self.chunk_size)
            if sha is not None and sha not in self.held:
                return response(200, {"run": "r1", "state": "failed", "reason": f"chunk {i} never uploaded"})
            whole.update(bytes(length) if sha is None else self.held[sha])
        if whole.hexdigest() != body["sha256"]:
            return response(200, {"run": "r1", "state": "failed", "reason": "the disk's sha256 differs"})
        return response(200, {"run": "r1", "state": self.done_state, "reason": "captured as 2026-12-07.1"})
