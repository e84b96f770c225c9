"""Rack multicast, the server's side, for real: ``provision serve`` inside a network namespace of the test's own
(lo multicast, 239.0.0.0/8 routed to it), three PCs hello'd through the real API (auto: the third one's plan is
multicast, the first two's HTTP), a plain socket joining the plan's group receives a whole pass whose frames
are byte-identical to the stored ones, the carousel pauses once keepalives stop (3 keepalive periods), and
the run's transfer report is recorded and shown by ``provision runs``.

Skipped, with the reason, when not root or without ``ip``.
"""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from provision.facts import load_probe
from provision.images import ImageStore
from provision.wire import paths
from provision.wire.carousel import BadDatagram, MulticastPlan, carousel_order, decode, digest16
from provision.wire.index import Index
from tests.support.images import MiB
from tests.support.netns_thread import Netns, netns, skip_reason
from tests.support.paths import SAMPLE_PROBE
from tests.support.rack_site import served_rack
from tests.support.serve import Running, stop

__all__ = ["netns"]  # the fixture, from tests/support/netns_thread.py

MACS = ["52:54:00:16:00:01", "52:54:00:16:00:02", "52:54:00:16:00:03"]
PORT = 18123
KEEPALIVE = 1  # seconds: a listener is dropped after 3 without a word

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")


@pytest.fixture
def served(tmp_path: Path, netns: Netns) -> Iterator[tuple[Running, ImageStore, str]]:
    multicast = {"port": PORT, "rate": 20_000_000, "keepalive_seconds": KEEPALIVE}
    with served_rack(tmp_path, netns, 6 * MiB, multicast) as site:
        yield site.run, site.images, site.digest


def hello(url: str, mac: str) -> tuple[str, dict[str, Any]]:
    script = requests.get(url + paths.boot_ipxe(mac), timeout=10).text
    token = re.search(r"provision\.token=([0-9a-f]+)", script)
    assert token is not None, script
    facts = {**load_probe(SAMPLE_PROBE).to_dict(), "mac": mac}
    answer = requests.post(url + paths.HELLO, json={"mac": mac, "token": token.group(1), "facts": facts}, timeout=10)
    assert answer.status_code == 200 and answer.json()["action"] == "image", answer.text
    return token.group(1), answer.json()


def call(url: str, run: str, token: str, event: str, **more: Any) -> dict[str, Any]:
    answer = requests.post(url + paths.run_multicast(run), json={"token": token, "event": event, **more}, timeout=10)
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def receiver(plan: MulticastPlan) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind((plan.group, plan.port))
    membership = struct.pack("4s4s", socket.inet_aton(plan.group), socket.inet_aton("127.0.0.1"))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
    sock.settimeout(0.2)
    return sock


def receive_pass(sock: socket.socket, plan: MulticastPlan, deadline: float) -> dict[int, bytes]:
    """Every chunk's frame, reassembled from the datagrams (a piece missed in one pass comes in the next)."""
    pieces: dict[int, dict[int, bytes]] = {}
    lengths: dict[int, int] = {}
    done: dict[int, bytes] = {}
    expected = digest16(plan.digest)
    while len(done) < plan.chunks and time.monotonic() < deadline:
        try:
            datagram = sock.recv(65536)
        except TimeoutError:
            continue
        try:
            piece = decode(datagram, expected)
        except BadDatagram as exc:
            raise AssertionError(f"the carousel sent a datagram a receiver drops: {exc}") from None
        if piece.chunk in done:
            continue
        got = pieces.setdefault(piece.chunk, {})
        got[piece.offset] = piece.payload
        lengths[piece.chunk] = piece.frame_length
        if sum(map(len, got.values())) == piece.frame_length:
            done[piece.chunk] = b"".join(got[o] for o in sorted(got))
    return done


def silence_after(sock: socket.socket, quiet: float, deadline: float) -> float | None:
    """The time the datagrams stopped (a ``quiet`` s silence followed), or None by ``deadline``."""
    last = time.monotonic()
    while time.monotonic() < deadline:
        try:
            sock.recv(65536)
            last = time.monotonic()
        except TimeoutError:
            if time.monotonic() - last >= quiet:
                return last
    return None


def test_three_pcs_one_carousel_byte_identical_then_paused_and_reported(
    served: tuple[Running, ImageStore, str], netns: Netns, tmp_path: Path
) -> None:
    run, images, digest = served
    answers = [netns.run(hello, run.url, mac) for mac in MACS]
    plans = [a["plan"].get("multicast") for _, a in answers]
    assert plans[0] is None and plans[1] is None, plans  # auto: 1, then 2 runs want the version
    assert plans[2] is not None, plans  # the third: multicast
    plan = MulticastPlan.from_dict(plans[2])
    index = Index.from_bytes(images.index_bytes("rack", digest))
    order = carousel_order(index.chunks)
    assert (plan.digest, plan.port, plan.chunks, plan.keepalive) == (digest, PORT, len(order), KEEPALIVE)
    assert plan.group.startswith("239.255.18.")
    token, answer = answers[2]
    run_id = answer["run"]

    sock = netns.run(receiver, plan)
    try:
        joined = netns.run(call, run.url, run_id, token, "join")
        assert (joined["sending"], joined["listeners"], joined["keepalive"]) == (True, 1, KEEPALIVE), joined
        frames = receive_pass(sock, plan, time.monotonic() + 20)
        assert len(frames) == len(order), f"{len(frames)} of {len(order)} chunks reassembled"
        for number, sha in enumerate(order):
            assert frames[number] == images.chunks.path(sha).read_bytes(), f"chunk {number} ({sha[:12]}) differs"
        beat = netns.run(call, run.url, run_id, token, "keepalive", chunks_done=len(order), bytes_received=1)
        assert beat["sending"] and beat["listeners"] == 1

        # keepalives stop: dropped after 3 periods (the reaper looks every period), the carousel pauses; a
        # generous deadline (a loaded machine only makes it later), and never before one keepalive period
        said = time.monotonic()
        stopped = silence_after(sock, quiet=1.5, deadline=said + 60)
        assert stopped is not None, "the carousel still sends 60 s after the last keepalive"
        assert stopped - said >= KEEPALIVE, f"the carousel stopped {stopped - said:.1f} s after a keepalive"
    finally:
        sock.close()

    # a later join resumes it; a leave pauses it at once
    again = netns.run(call, run.url, run_id, token, "join")
    assert again["sending"] and again["listeners"] == 1
    left = netns.run(call, run.url, run_id, token, "leave", reason="one full cycle")
    assert (left["sending"], left["listeners"]) == (False, 0)

    data = len(index.data_chunks)
    verification = {"digest": digest, "chunks": data, "verified": data, "read_back_ok": True,
                    "bytes_written": 6 * MiB, "seconds": 1.0, "mean_rate": 6e6, "wipe_method": "BLKZEROOUT",
                    "wipe_ranges": []}  # fmt: skip
    transfer = {"mode": "multicast", "bytes_multicast": 1_000_000, "bytes_http": 50_000, "repair_bytes": 20_000,
                "chunks_multicast": len(order) - 1, "chunks_http": 1, "datagrams": 700, "datagrams_lost": 7,
                "seconds_listening": 2.5, "left_because": "one full cycle"}  # fmt: skip
    body = {"token": token, "ok": True, "report": verification, "transfer": transfer}
    ended = netns.run(lambda: requests.post(run.url + paths.run_report(run_id), json=body, timeout=10))
    assert ended.status_code == 200 and ended.json()["state"] == "done", ended.text
    late = {"token": token, "event": "join"}  # the run ended: no carousel for it
    assert (
        netns.run(lambda: requests.post(run.url + paths.run_multicast(run_id), json=late, timeout=10)).status_code
        == 409
    )

    shown = subprocess.run([sys.executable, "-m", "provision", "runs", MACS[2], "--state-dir", str(run.state)],
                           capture_output=True, text=True, timeout=60, check=True).stdout  # fmt: skip
    assert "transfer multicast: 1.0 MiB by multicast" in shown and "7 of 707 datagrams lost" in shown, shown
    assert "left: one full cycle" in shown, shown
    english = ["Transfer", "by multicast", "by HTTP", "1% of datagrams lost", "left the carousel: one full cycle"]
    for lang, words in (("en", english), ("fr", ["Transfert", "en multidiffusion", "par HTTP", "de réparations"])):
        page = netns.run(lambda lang=lang: requests.get(f"{run.url}/machines/{MACS[2]}?lang={lang}", timeout=10))
        assert page.status_code == 200 and all(w in page.text for w in words), (lang, words)
    metrics = netns.run(lambda: requests.get(run.url + paths.METRICS, timeout=10)).text
    moved = dict(re.findall(r'^provision_transfer_bytes_total\{transfer="(\w+)"\} (\S+)$', metrics, re.M))
    assert {k: float(v) for k, v in moved.items()} == {"multicast": 1e6, "http": 5e4, "repair": 2e4}, metrics
    rc, _out, err = stop(run)
    assert rc == 0, err
    for line in ("joins carousel", "sending to", "dropped from carousel", "paused at pass"):
        assert line in err, f"{line!r} not logged:\n{err[-3000:]}"
    assert "UDP GSO on" in err or "UDP GSO refused" in err, err[-3000:]  # detected once, either way
