"""Simulated agents: threads that speak the agent API to a served app over HTTP as the live environment's agent
does (boot script -> hello -> progress -> report), without writing any disk (functional tests of the server under
concurrent load: tests/functional/test_backup.py).

- ``boot(url, mac)``: the per-boot token of the machine's iPXE script; ``hello(url, mac, token)``: the answer.
- ``Agents(url, digest, chunks, macs, runs)``: one thread per MAC; each machine goes through at least ``runs``
  imaging runs, every one with a hello, three progress calls and a report: all but the last report another digest
  than the plan's (the run fails and the machine boots the live environment again), and they go on failing until
  the test sets ``finish``; then the last run, a good one (done).
  ``start()``, ``join()``; ``acknowledged`` (the run ids whose report the server answered, in order) and
  ``errors`` (what went wrong in a thread) are read under ``lock``.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import requests

from provision.facts import load_probe
from tests.support.paths import SAMPLE_PROBE

MiB = 1 << 20
_FACTS = load_probe(SAMPLE_PROBE).to_dict()


def boot(url: str, mac: str) -> str:
    script = requests.get(f"{url}/boot/{mac}.ipxe", timeout=10)
    assert script.status_code == 200, script.text
    token = re.search(r"provision\.token=([0-9a-f]+)", script.text)
    assert token is not None, script.text
    return token.group(1)


def hello(url: str, mac: str, token: str) -> dict[str, Any]:
    r = requests.post(f"{url}/api/v1/hello", json={"mac": mac, "token": token, "facts": _FACTS}, timeout=10)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def report(token: str, digest: str, chunks: int) -> dict[str, Any]:
    body = {
        "digest": digest, "chunks": chunks, "verified": chunks, "read_back_ok": True, "wipe_method": "zeroout",
        "wipe_ranges": [[0, 4096]], "bytes_written": 4 * MiB, "seconds": 2.0, "mean_rate": 2 * MiB,
    }  # fmt: skip
    return {"token": token, "ok": True, "report": body}


class Agents:
    """``runs`` imaging runs of each MAC, one thread per MAC, against the server at ``url``."""

    def __init__(self, url: str, digest: str, chunks: int, macs: list[str], runs: int) -> None:
        self.url, self.digest, self.chunks, self.macs, self.runs = url, digest, chunks, macs, runs
        # set by the test: until then each agent goes on with failing runs after its first runs - 1, so that the
        # load lasts as long as what the test does meanwhile (a backup), however slow the machine
        self.finish = threading.Event()
        self.lock = threading.Lock()
        self.acknowledged: list[str] = []
        self.errors: list[str] = []
        self._threads = [threading.Thread(target=self._agent, args=(mac,), name=mac) for mac in macs]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self, timeout: float = 120) -> None:
        for thread in self._threads:
            thread.join(timeout)
        assert not any(t.is_alive() for t in self._threads), "an agent thread is still running"

    def acked(self) -> list[str]:
        with self.lock:
            return list(self.acknowledged)

    def _agent(self, mac: str) -> None:
        try:
            for _ in range(self.runs - 1):
                self._run(mac, last=False)
            while not self.finish.is_set():
                self._run(mac, last=False)
            self._run(mac, last=True)
        except Exception as exc:  # a thread's failure is reported by the test, not lost
            with self.lock:
                self.errors.append(f"{mac}: {type(exc).__name__}: {exc}")

    def _run(self, mac: str, *, last: bool) -> None:
        token = boot(self.url, mac)
        answer = hello(self.url, mac, token)
        assert answer["action"] == "image", answer
        run_id = answer["run"]
        for done, stage in ((1, "writing"), (5, "writing"), (10, "verifying")):
            progress = {"token": token, "stage": stage, "bytes_done": done, "bytes_total": 10, "rate": 1.5}
            r = requests.post(f"{self.url}/api/v1/runs/{run_id}/progress", json=progress, timeout=10)
            assert r.status_code == 200, r.text
        digest = self.digest if last else "f" * 64  # another digest than planned: the run fails
        r = requests.post(f"{self.url}/api/v1/runs/{run_id}/report", json=report(token, digest, self.chunks),
                          timeout=10)  # fmt: skip
        assert r.status_code == 200 and r.json()["state"] == ("done" if last else "failed"), r.text
        with self.lock:
            self.acknowledged.append(run_id)
