"""The TFTP service on 127.0.0.1 (port 0) against tftpy's client and hand-made datagrams."""

from __future__ import annotations

import errno
import io
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tftpy

from provision.tftp import ServiceError, TftpService
from tests.support.wait import wait_for

SIZES = [0, 511, 512, 1024 * 1024 + 7]
WAIT = 3.0  # seconds for a log line to appear or the service to stop
DATA, ACK, ERROR, OACK = 3, 4, 5, 6


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "grub").mkdir(parents=True)
    for size in SIZES:
        (root / f"file-{size}").write_bytes(os.urandom(size))
    (root / "big").write_bytes(os.urandom(256 * 1024))
    (root / "grub" / "static.cfg").write_text("set timeout=1\n")
    (tmp_path / "secret").write_text("secret\n")
    (root / "link-out").symlink_to(tmp_path / "secret")
    return root


def render(path: str, client_ip: str) -> bytes | None:
    if path == "grub/grub.cfg":
        return f"# for {client_ip}\nsource /grub/hosts/$net_default_mac.cfg\n".encode()
    if path.startswith("grub/hosts/"):
        return b"x" * 3000  # several 512-byte blocks
    if path == "broken.cfg":
        raise RuntimeError("template exploded")
    return None


@pytest.fixture
def service(root: Path) -> Iterator[TftpService]:
    with TftpService(root, "127.0.0.1", 0, dynamic=render) as service:
        yield service


def download(port: int, name: str, options: dict[str, int] | None = None) -> tuple[bytes, dict[str, str]]:
    """Fetch with tftpy's client; returns the bytes and the options of the OACK (if any)."""
    out, oack = io.BytesIO(), {}

    def hook(packet: object) -> None:
        if isinstance(packet, tftpy.TftpPacketTypes.TftpPacketOACK):
            oack.update(packet.options)

    client = tftpy.TftpClient("127.0.0.1", port, options=dict(options or {}))
    client.download(name, out, packethook=hook, timeout=3)
    return out.getvalue(), oack


class Raw:
    """A hand-driven TFTP client socket."""

    def __init__(self, port: int) -> None:
        self.server = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(3)
        self.peer: tuple[str, int] | None = None

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def request(self, name: str | bytes, *options: str, mode: str = "octet", opcode: int = 1) -> None:
        raw = name if isinstance(name, bytes) else name.encode()
        fields = [raw, mode.encode(), *(o.encode() for o in options)]
        self.sock.sendto(struct.pack("!H", opcode) + b"".join(f + b"\0" for f in fields), self.server)

    def recv(self) -> tuple[int, bytes]:
        data, self.peer = self.sock.recvfrom(70000)
        return struct.unpack("!H", data[:2])[0], data[2:]

    def send(self, data: bytes) -> None:
        assert self.peer is not None
        self.sock.sendto(data, self.peer)

    def ack(self, block: int) -> None:
        self.send(struct.pack("!HH", ACK, block))

    def error(self, code: int, message: str) -> None:
        self.send(struct.pack("!HH", ERROR, code) + message.encode() + b"\0")

    def first_error(self, name: str | bytes, *options: str, mode: str = "octet", opcode: int = 1) -> int:
        self.request(name, *options, mode=mode, opcode=opcode)
        kind, body = self.recv()
        assert kind == ERROR, (kind, body[:40])
        return int(struct.unpack("!H", body[:2])[0])

    def fetch(self, name: str, *options: str) -> bytes:
        """Download in lock-step, following block-number rollover; blksize from the OACK."""
        self.request(name, *options)
        blksize, block, out = 512, 0, bytearray()
        while True:
            kind, body = self.recv()
            if kind == OACK:
                fields = body.split(b"\0")
                blksize = int(dict(zip(fields[0::2], fields[1::2], strict=False)).get(b"blksize", 512))
                self.ack(0)
                continue
            assert kind == DATA, (kind, body[:40])
            number = struct.unpack("!H", body[:2])[0]
            assert number == (block + 1) % 65536
            block = number
            out += body[2:]
            self.ack(block)
            if len(body) - 2 < blksize:
                return bytes(out)


def messages(caplog: pytest.LogCaptureFixture, level: int | None = None) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "provision.tftp" and level in (None, r.levelno)]


# --- downloads ---


@pytest.mark.parametrize("blksize", [512, 1468])
@pytest.mark.parametrize("size", SIZES)
def test_download_is_byte_identical(service, root, blksize, size):
    data, oack = download(service.port, f"file-{size}", {"blksize": blksize, "tsize": 0})
    assert data == (root / f"file-{size}").read_bytes()
    assert oack == {"blksize": str(blksize), "tsize": str(size)}


@pytest.mark.parametrize("size", SIZES)
def test_download_without_options(service, root, size):
    """RFC 1350 only: no OACK, 512-byte blocks straight away."""
    data, oack = download(service.port, f"/file-{size}")
    assert (data, oack) == ((root / f"file-{size}").read_bytes(), {})


def test_no_options_means_data_first(service, root):
    with Raw(service.port) as raw:
        raw.request("file-1048583")
        kind, body = raw.recv()
        assert (kind, body[:2], len(body) - 2) == (DATA, b"\0\1", 512)
        raw.error(0, "done")


def test_oack_has_only_what_was_asked_and_legal(service, root):
    with Raw(service.port) as raw:
        raw.request("file-511", "blksize", "65464", "tsize", "0", "timeout", "3", "windowsize", "4", "foo", "bar")
        kind, body = raw.recv()
        assert kind == OACK
        assert body == b"blksize\x001468\x00tsize\x00511\x00timeout\x003\x00"
        raw.ack(0)
        kind, body = raw.recv()
        assert (kind, body[2:]) == (DATA, (root / "file-511").read_bytes())
        raw.ack(1)


def test_tsize_alone_keeps_512(service, root):
    with Raw(service.port) as raw:
        raw.request("file-1048583", "tsize", "0")
        assert raw.recv() == (OACK, b"tsize\x001048583\x00")
        raw.ack(0)
        kind, body = raw.recv()
        assert (kind, len(body) - 2) == (DATA, 512)
        raw.error(0, "enough")


@pytest.mark.parametrize("value", ["4", "abc", "-1", ""])
def test_illegal_blksize_is_ignored(service, root, value):
    with Raw(service.port) as raw:
        raw.request("file-1048583", "blksize", value)
        kind, body = raw.recv()
        assert (kind, body[:2], len(body) - 2) == (DATA, b"\0\1", 512)
        raw.error(0, "enough")
    assert download(service.port, "file-511")[0] == (root / "file-511").read_bytes()


def test_raw_fetch_with_oack(service, root):
    with Raw(service.port) as raw:
        assert raw.fetch("file-1048583", "blksize", "1000", "tsize", "0") == (root / "file-1048583").read_bytes()


# --- dynamic files ---


def test_dynamic_file_with_tsize(service):
    data, oack = download(service.port, "/grub/grub.cfg", {"tsize": 0})
    assert data == b"# for 127.0.0.1\nsource /grub/hosts/$net_default_mac.cfg\n"
    assert oack == {"tsize": str(len(data))}


@pytest.mark.parametrize("blksize", [512, 1468])
def test_dynamic_per_mac_file(service, blksize):
    data, oack = download(service.port, "grub/hosts/52:54:00:12:34:56.cfg", {"blksize": blksize, "tsize": 0})
    assert data == b"x" * 3000
    assert oack["tsize"] == "3000"


def test_dynamic_none_falls_back_to_files(service, root):
    assert download(service.port, "grub/static.cfg")[0] == b"set timeout=1\n"


def test_dynamic_gets_normalized_paths_only(root):
    seen: list[tuple[str, str]] = []

    def spy(path: str, client_ip: str) -> bytes | None:
        seen.append((path, client_ip))
        return None

    with TftpService(root, "127.0.0.1", 0, dynamic=spy) as service, Raw(service.port) as raw:
        download(service.port, "//grub/./static.cfg")
        assert raw.first_error("../grub/grub.cfg") == 2
    assert seen == [("grub/static.cfg", "127.0.0.1")]


def test_dynamic_failure_is_an_error_not_a_crash(service, caplog):
    caplog.set_level(logging.INFO)
    with Raw(service.port) as raw:
        assert raw.first_error("broken.cfg") == 0
    assert any("rendering broken.cfg failed" in m for m in messages(caplog, logging.ERROR))
    assert download(service.port, "grub/grub.cfg")[0].startswith(b"# for")


# --- concurrency ---


def test_fifty_concurrent_clients(service, root):
    expected = (root / "big").read_bytes()
    results: dict[int, bytes | BaseException] = {}
    start = threading.Barrier(50)

    def client(index: int) -> None:
        try:
            start.wait()
            options = {"blksize": 512 if index % 2 else 1468, "tsize": 0}
            results[index] = download(service.port, "big", options)[0]
        except BaseException as exc:
            results[index] = exc

    peak, done = [0], threading.Event()

    def sample() -> None:  # how many transfers the one server thread multiplexes at once
        while not done.is_set():
            peak[0] = max(peak[0], len(service._transfers))
            time.sleep(0.01)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(50)]
    sampler = threading.Thread(target=sample)
    sampler.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    done.set()
    sampler.join()
    assert len(results) == 50
    assert peak[0] >= 10, peak
    failures = {i: r for i, r in results.items() if r != expected}
    assert not failures, {i: (r if isinstance(r, BaseException) else len(r)) for i, r in failures.items()}


# --- security ---


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("../secret", 2),
        ("/../secret", 2),
        ("grub/../../secret", 2),
        ("..\\secret", 2),
        ("link-out", 2),
        ("/etc/passwd", 1),
        ("grub", 2),
        ("/", 2),
        ("missing", 1),
    ],
)
def test_refused_paths(service, name, code, caplog):
    caplog.set_level(logging.INFO)
    with Raw(service.port) as raw:
        assert raw.first_error(name) == code
    with pytest.raises(tftpy.TftpException):
        download(service.port, name)
    level = logging.INFO if code == 1 else logging.WARNING
    assert any(repr(name) in m and "127.0.0.1" in m for m in messages(caplog, level))
    assert download(service.port, "file-511")[0]  # still serving


def test_refusal_does_not_tell_why(service):
    with Raw(service.port) as raw:
        raw.request("link-out")
        assert raw.recv() == (ERROR, b"\0\2Access violation\0")


def test_write_request_refused(service, root, caplog):
    caplog.set_level(logging.INFO)
    client = tftpy.TftpClient("127.0.0.1", service.port, flock=False)  # tftpy flock()s a BytesIO otherwise
    with pytest.raises(tftpy.TftpException):
        client.upload("uploaded.bin", io.BytesIO(b"evil"), timeout=3)
    with Raw(service.port) as raw:
        assert raw.first_error("file-511", opcode=2) == 2
    assert not (root / "uploaded.bin").exists()
    assert (root / "file-511").stat().st_size == 511
    assert any("write request" in m and "read-only" in m for m in messages(caplog, logging.WARNING))


def test_netascii_is_refused(service):
    with Raw(service.port) as raw:
        assert raw.first_error("file-511", mode="netascii") == 4


@pytest.mark.parametrize(
    "datagram",
    [
        b"\0\1caf\xe9\0octet\0",  # killed tftpy's own server: UnicodeDecodeError
        b"\0\1file-511\0octet\0blksize\0abc\0",  # ValueError
        b"\0\1grub\0octet\0",  # IsADirectoryError
        b"\0\4\0",  # struct.error
        b"\0\1file-511",
        b"\0\x09junk",
        b"\0\5\0\1oops\0",
        b"x",
    ],
)
def test_garbage_does_not_stop_the_server(service, root, datagram):
    with Raw(service.port) as raw:
        raw.sock.sendto(datagram, raw.server)
    assert download(service.port, "file-512")[0] == (root / "file-512").read_bytes()
    assert service.running


def test_garbage_inside_a_transfer(service, root, caplog):
    caplog.set_level(logging.INFO)
    with Raw(service.port) as raw:
        raw.request("file-1048583")
        raw.recv()
        raw.send(b"\0\4\0")  # a 3-byte ACK
        assert raw.recv()[0] == ERROR
    assert download(service.port, "file-512")[0] == (root / "file-512").read_bytes()
    assert any("malformed packet" in m for m in messages(caplog, logging.WARNING))


def test_unknown_transfer_id(service, root):
    """A packet from another port gets ERROR 5; the real transfer goes on."""
    with Raw(service.port) as raw, Raw(service.port) as stranger:
        raw.request("file-1048583")
        raw.recv()
        assert raw.peer is not None
        stranger.sock.sendto(struct.pack("!HH", ACK, 1), raw.peer)
        kind, body = stranger.recv()
        assert (kind, body[:2]) == (ERROR, b"\0\5")
        raw.ack(1)
        kind, body = raw.recv()
        assert (kind, body[:2]) == (DATA, b"\0\2")
        raw.error(0, "enough")


def test_repeated_request_is_not_a_second_transfer(service, root):
    """A client that missed our first answer repeats its RRQ from the same port: one transfer goes on."""
    with Raw(service.port) as raw:
        raw.request("file-1048583")
        first = raw.recv()
        peer = raw.peer
        raw.request("file-1048583")
        raw.ack(1)
        kind, body = raw.recv()
        assert (kind, body[:2], raw.peer) == (DATA, b"\0\2", peer)
        assert first[1][:2] == b"\0\1"
        raw.error(0, "enough")


def test_new_request_from_the_same_port_replaces_the_transfer(service, root, caplog):
    caplog.set_level(logging.INFO)
    with Raw(service.port) as raw:
        raw.request("file-1048583")
        raw.recv()
        raw.ack(1)
        raw.recv()
        old_peer = raw.peer
        raw.request("file-511")
        kind, body = raw.recv()
        assert (kind, body[2:]) == (DATA, (root / "file-511").read_bytes())
        assert raw.peer != old_peer
        raw.ack(1)
    assert wait_for(lambda: any("new request from the same port" in m for m in messages(caplog, logging.INFO)), WAIT)
    assert wait_for(lambda: any("sent file-511, 511 bytes" in m for m in messages(caplog, logging.INFO)), WAIT)


# --- timeouts, aborts, logging ---


def test_lost_ack_is_resent_then_given_up(root, caplog):
    caplog.set_level(logging.INFO)
    with TftpService(root, "127.0.0.1", 0, timeout=0.2, retries=2) as service, Raw(service.port) as raw:
        raw.request("file-1048583")
        first = raw.recv()
        started = time.monotonic()
        assert raw.recv() == first  # resent after the timeout
        assert 0.15 < time.monotonic() - started < 1
        assert raw.recv() == first
        assert wait_for(lambda: any("no answer after 2 resends" in m for m in messages(caplog, logging.WARNING)), WAIT)
        assert not service._transfers


def test_client_timeout_option_sets_the_resend_time(service):
    with Raw(service.port) as raw:
        raw.request("file-1048583", "timeout", "1")
        assert raw.recv() == (OACK, b"timeout\x001\x00")
        raw.ack(0)
        first = raw.recv()
        started = time.monotonic()
        assert raw.recv() == first
        assert 0.8 < time.monotonic() - started < 1.8
        raw.error(0, "enough")


def test_ovmf_size_probe_is_not_an_error(service, caplog):
    """OVMF: RRQ with tsize, read the OACK, send ERROR 8 - then ask again. Logged at INFO, nothing at ERROR."""
    caplog.set_level(logging.DEBUG)
    with Raw(service.port) as raw:
        raw.request("file-1048583", "blksize", "1468", "tsize", "0", "windowsize", "4")
        assert raw.recv() == (OACK, b"blksize\x001468\x00tsize\x001048583\x00")
        raw.error(8, "User aborted the transfer")
    assert wait_for(lambda: any("size probe" in m for m in messages(caplog, logging.INFO)), WAIT)
    assert download(service.port, "file-1048583", {"blksize": 1468, "tsize": 0})[0]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_completed_transfer_is_logged(service, caplog):
    caplog.set_level(logging.INFO)
    download(service.port, "/file-1048583", {"blksize": 1468})
    pattern = "client 127.0.0.1:"
    assert wait_for(
        lambda: any(pattern in m and "sent file-1048583, 1048583 bytes in" in m for m in messages(caplog)), WAIT
    )
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_client_abort_mid_transfer_is_a_warning(service, caplog):
    caplog.set_level(logging.INFO)
    with Raw(service.port) as raw:
        raw.request("file-1048583")
        raw.recv()
        raw.ack(1)
        raw.recv()
        raw.error(0, "disk full")
    assert wait_for(
        lambda: any("client aborted" in m and "1024 of 1048583" in m for m in messages(caplog, logging.WARNING)), WAIT
    )


# --- start and stop ---


def test_stop_is_prompt_and_ends_transfers(root):
    service = TftpService(root, "127.0.0.1", 0, timeout=30)
    service.start()
    port = service.port
    assert port != 0
    with Raw(port) as raw:
        raw.request("file-1048583")
        raw.recv()  # a transfer is waiting for our ACK
        started = time.monotonic()
        service.stop()
        assert time.monotonic() - started < 0.5
        assert not service.running
        kind, body = raw.recv()
        assert (kind, body) == (ERROR, b"\0\0server shutting down\0")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", port))  # the port is free again


def test_idle_stop_is_prompt(root):
    service = TftpService(root, "127.0.0.1", 0)
    service.start()
    time.sleep(0.1)
    started = time.monotonic()
    service.stop()
    assert time.monotonic() - started < 0.5
    service.stop()  # twice is fine


def test_restart_after_stop(root):
    service = TftpService(root, "127.0.0.1", 0)
    for _ in range(2):
        service.start()
        assert download(service.port, "file-511")[0] == (root / "file-511").read_bytes()
        service.stop()


def test_port_in_use(service, root):
    other = TftpService(root, "127.0.0.1", service.port)
    with pytest.raises(ServiceError, match="already in use") as caught:
        other.start()
    exc = caught.value
    assert (exc.port, exc.address, exc.errno) == (service.port, "127.0.0.1", errno.EADDRINUSE)
    assert not other.running


def test_address_not_here(root):
    with pytest.raises(ServiceError, match="not configured") as caught:
        TftpService(root, "192.0.2.1", 0).start()
    assert caught.value.address == "192.0.2.1"


def test_unknown_interface(root):
    with pytest.raises(ServiceError) as caught:
        TftpService(root, "127.0.0.1", 0, interface="nosuchnic0").start()
    assert caught.value.interface == "nosuchnic0"
    assert caught.value.errno in (errno.ENODEV, errno.EPERM)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may bind port 69")
def test_privileged_port_needs_root(root):
    with pytest.raises(ServiceError, match="permission denied") as caught:
        TftpService(root, "127.0.0.1", 69).start()
    assert caught.value.port == 69


def test_a_failing_server_thread_is_reported(root, caplog):
    failures: list[ServiceError] = []
    service = TftpService(root, "127.0.0.1", 0, on_failure=failures.append)

    def broken() -> None:
        raise RuntimeError("bug")

    service._check_timeouts = broken  # type: ignore[method-assign]
    service.start()
    with Raw(service.port) as raw:
        raw.sock.sendto(b"x", raw.server)  # one turn of the loop
    assert wait_for(lambda: not service.running, WAIT)
    service.stop()
    assert len(failures) == 1
    assert failures[0].port == service.port
    assert "RuntimeError('bug')" in str(failures[0])
    assert any("stopped by an unexpected error" in m for m in messages(caplog, logging.ERROR))


def test_start_twice_is_refused(service):
    with pytest.raises(ServiceError, match="already started"):
        service.start()


def test_wildcard_address_replies_from_the_address_asked(root):
    """Bound to 0.0.0.0, replies leave from the address the request came to (IP_PKTINFO)."""
    with TftpService(root, "0.0.0.0", 0) as service, Raw(service.port) as raw:
        raw.server = ("127.0.0.2", service.port)  # also on lo; the kernel would answer from 127.0.0.1
        raw.request("file-511")
        raw.recv()
        assert raw.peer is not None and raw.peer[0] == "127.0.0.2"
        raw.ack(1)
        assert download(service.port, "file-512")[0] == (root / "file-512").read_bytes()


def test_bound_to_an_interface(root):
    try:
        service = TftpService(root, "0.0.0.0", 0, interface="lo")
        service.start()
    except ServiceError as exc:
        pytest.skip(f"SO_BINDTODEVICE not allowed here: {exc}")
    try:
        assert download(service.port, "file-512")[0] == (root / "file-512").read_bytes()
    finally:
        service.stop()
