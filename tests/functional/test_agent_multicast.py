"""The agent's multicast receiver against a real UDP carousel sender (built from the wire contract) in a network
namespace of the test's own (lo with multicast, 239.0.0.0/8 routed to it), the chunks' HTTP (ranges included)
from the real image routes: three agents, one joining late, with loss injected; every disk written and verified."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from provision.agent import WriteReport, read_index, write_image
from provision.agent.index import Index
from provision.agent.multicast import MulticastSource, Timeouts, UdpReceiver
from provision.images import ImageStore, ImageVersion
from provision.web.images import image_app
from provision.wire.carousel import MulticastAnswer, MulticastCall, MulticastPlan, TransferReport, carousel_order
from tests.support.carousel import CarouselSender
from tests.support.chunk_server import SIZE, build_store, target_sha
from tests.support.files import sparse_file
from tests.support.images import serve
from tests.support.netns_thread import Netns, netns, skip_reason

__all__ = ["netns"]  # the fixture, from tests/support/netns_thread.py

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))

GROUP, PORT = "239.77.1.1", 45901
RATE = 8_000_000  # bytes a second: one pass of the test image in about half a second
TOKEN = "t0ken-of-the-run"


class Api:
    """The agent API's multicast calls, recorded (the sender here does not listen to them)."""

    def __init__(self) -> None:
        self.calls: list[MulticastCall] = []
        self.lock = threading.Lock()

    def multicast(self, run: str, call: MulticastCall) -> MulticastAnswer:
        with self.lock:
            self.calls.append(call)
        return MulticastAnswer(run, call.event != "leave", 1)


@dataclass
class Image:
    store: ImageStore
    version: ImageVersion
    raw: Path
    index: Index
    frames: list[bytes]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    tmp = tmp_path_factory.mktemp("mc")
    store, version, raw = build_store(tmp)
    index = read_index(store.index_bytes(version.name, version.digest))
    frames = [store.chunks.path(sha).read_bytes() for sha in carousel_order(index.chunks)]
    return Image(store, version, raw, index, frames)


@dataclass
class Agent:
    name: str
    delay: float  # seconds after the sender starts
    report: WriteReport | None = None
    transfer: TransferReport | None = None
    start: tuple[int, int] | None = None
    error: BaseException | None = None


def run_agents(image: Image, tmp: Path, agents: list[Agent], *, drop_every: int) -> tuple[CarouselSender, Api]:
    """In the namespace: the image routes, the sender, and the agents, each on its own thread."""
    api = Api()
    plan = MulticastPlan(GROUP, PORT, image.index.digest, len(image.frames), RATE, keepalive=1, max_loss=0.2)
    with serve(image_app(image.store)) as url:
        sender = CarouselSender(image.frames, image.index.digest, GROUP, PORT, rate=RATE, drop_every=drop_every)
        sender.start()

        def agent(a: Agent) -> None:
            time.sleep(a.delay)
            source = MulticastSource(plan, image.index, run=a.name, token=TOKEN, api=api,
                                     open_receiver=lambda p: UdpReceiver(p, url), timeouts=Timeouts(2, 2))  # fmt: skip
            try:
                target = sparse_file(tmp / f"{a.name}.img", SIZE)
                a.report = write_image(url, image.index, target, source=source, workers=2, log_id=a.name)
            except BaseException as exc:
                a.error = exc
            a.transfer = source.report()
            a.start = source.reassembly.start if source.reassembly else None

        threads = [threading.Thread(target=agent, args=(a,), name=a.name) for a in agents]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        sender.stop()
    return sender, api


def test_three_agents_one_late_with_loss_all_verified(image: Image, netns: Netns, tmp_path: Path) -> None:
    pass_seconds = sum(map(len, image.frames)) / RATE
    agents = [Agent("pc1", 0.0), Agent("pc2", 0.05), Agent("late", 0.3 * pass_seconds + 0.2)]
    sender, api = netns.run(run_agents, image, tmp_path, agents, drop_every=97)
    frame_bytes = sum(map(len, image.frames))
    for a in agents:
        assert a.error is None and a.report is not None and a.report.ok, (a.name, a.error)
        assert target_sha(tmp_path / f"{a.name}.img") == target_sha(image.raw), a.name
        t = a.transfer
        assert t is not None and t.mode == "multicast", (a.name, t)
        assert t.left_because in ("all chunks received", "one full cycle"), (a.name, t)
        assert t.chunks_multicast + t.chunks_http == len(image.frames)
        assert t.chunks_multicast >= 0.9 * len(image.frames) and t.bytes_http < 0.1 * frame_bytes, (a.name, t)
        assert t.repair_bytes > 0 and t.datagrams_lost > 0, (a.name, t)  # the sender drops every 97th datagram
        assert t.seconds_listening < 3 * pass_seconds + 2, (a.name, t)
    late = next(a for a in agents if a.name == "late")
    assert late.start is not None and late.start != (0, 0)  # joined mid-loop
    assert sender.dropped > 0 and sender.sent > len(image.frames)
    events = [c.event for c in api.calls]
    assert events.count("join") == events.count("leave") == 3


def test_no_multicast_in_the_namespace_falls_back_to_http(image: Image, netns: Netns, tmp_path: Path) -> None:
    agents = [Agent("alone", 0.0)]

    def without_sender() -> None:
        api = Api()
        plan = MulticastPlan(GROUP, PORT, image.index.digest, len(image.frames), RATE, keepalive=1)
        with serve(image_app(image.store)) as url:
            source = MulticastSource(plan, image.index, run="alone", token=TOKEN, api=api,
                                     open_receiver=lambda p: UdpReceiver(p, url),
                                     timeouts=Timeouts(0.5, 0.5))  # fmt: skip
            agents[0].report = write_image(url, image.index, sparse_file(tmp_path / "alone.img", SIZE), source=source)
            agents[0].transfer = source.report()

    netns.run(without_sender)
    t = agents[0].transfer
    assert agents[0].report is not None and agents[0].report.ok and t is not None
    assert target_sha(tmp_path / "alone.img") == target_sha(image.raw)
    assert t.left_because == "no multicast: no datagram within 0.5 s of joining" and t.chunks_multicast == 0
    assert t.chunks_http == len(image.frames) and t.bytes_http == sum(map(len, image.frames))
