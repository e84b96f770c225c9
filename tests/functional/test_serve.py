"""`provision serve` as a real process on 127.0.0.1 with port 0: HTTP, TFTP and DHCP together.

Boot scripts per MAC (URL-encoded by old iPXE), the per-boot token checked by the agent API, GRUB configs
over TFTP, a DHCP answer, a clean SIGTERM, and the first fatal error stopping everything with a message.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import tftpy

from provision.dhcp import DhcpPacket, MessageType, Opt, parse
from tests.support.serve import Running, start, stop

MAC = "52:54:00:12:34:56"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Running]:
    run = start(tmp_path)
    try:
        yield run
    finally:
        if run.proc.poll() is None:
            stop(run)


def test_boot_script_token_and_hello(served: Running) -> None:
    assert requests.get(f"{served.url}/healthz", timeout=5).json()["ok"] is True
    script = requests.get(f"{served.url}/boot/52%3A54%3A00%3A12%3A34%3A56.ipxe", timeout=5)
    assert script.status_code == 200 and script.text.startswith("#!ipxe\n")
    assert f"provision.server={served.url} " in script.text
    assert f"kernel {served.url}/files/live/vmlinuz" in script.text
    token = re.search(r"provision\.token=([0-9a-f]+)", script.text)
    assert token is not None

    hello = {"mac": MAC, "token": token.group(1), "boot": {"firmware": "bios", "secure_boot": False}}
    bad = requests.post(f"{served.url}/api/v1/hello", json={**hello, "token": "0" * 32}, timeout=5)
    assert bad.status_code == 403 and "token" in bad.json()["error"]
    ok = requests.post(f"{served.url}/api/v1/hello", json=hello, timeout=5)
    assert ok.status_code == 200, ok.text
    machines = requests.get(f"{served.url}/api/v1/machines", timeout=5).json()
    assert [(m["mac"], m["state"], m["boots"]) for m in machines] == [(MAC, "waiting", 1)]
    events = requests.get(f"{served.url}/api/v1/machines/{MAC}/events", timeout=5).json()
    assert [e["kind"] for e in events] == ["boot", "hello", "state"]
    assert events[1]["detail"]["boot"] == {"firmware": "bios", "secure_boot": False, "kernel": None}


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ("not json", 400, "not JSON"),
        ("[1, 2]", 400, "JSON object"),
        ('{"mac": "zz", "token": "0123456789"}', 422, "mac"),
        ('{"mac": "52:54:00:12:34:56"}', 422, "token"),
        ('{"mac": "52:54:00:12:34:56", "token": "0123456789", "boot": {"firmware": "dos"}}', 422, "boot.firmware"),
        ('{"mac": "52:54:00:12:34:56", "token": "0123456789", "extra": 1}', 422, "extra"),
    ],
)
def test_bad_payloads_get_4xx_with_reason(served: Running, body: str, status: int, needle: str) -> None:
    r = requests.post(f"{served.url}/api/v1/hello", data=body, timeout=5)
    assert r.status_code == status
    assert needle in r.text


def test_files_stay_inside_the_boot_root(served: Running, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("nope")
    (served.root / "escape").symlink_to(tmp_path / "secret")
    assert (
        requests.get(f"{served.url}/files/undionly.kpxe", timeout=5).content
        == (served.root / "undionly.kpxe").read_bytes()
    )
    for path in ("/files/../secret", "/files/%2e%2e/secret", "/files/escape", "/files/..%2Fsecret", "/files/"):
        r = requests.get(served.url + path, timeout=5)
        assert r.status_code in (403, 404), path
        assert "nope" not in r.text
    assert requests.get(f"{served.url}/boot/not-a-mac.ipxe", timeout=5).status_code == 400


def test_grub_configs_over_tftp(served: Running, tmp_path: Path) -> None:
    client = tftpy.TftpClient("127.0.0.1", served.ports["tftp"], options={"blksize": 1468})
    main = tmp_path / "grub.cfg"
    client.download("grub/grub.cfg", str(main))
    assert "source /grub/hosts/$net_default_mac.cfg" in main.read_text()
    host = tmp_path / "host.cfg"
    client.download(f"/grub/hosts/{MAC}.cfg", str(host))
    text = host.read_text()
    assert f"provision.mac={MAC}" in text and "linux /live/vmlinuz" in text
    kpxe = tmp_path / "undionly.kpxe"
    client.download("undionly.kpxe", str(kpxe))
    assert kpxe.read_bytes() == (served.root / "undionly.kpxe").read_bytes()


def test_dhcp_proxy_answers_a_pxe_rom(served: Running) -> None:
    discover = DhcpPacket(
        op=1, xid=0x1234ABCD, chaddr=bytes.fromhex("525400123456") + bytes(10),
        options={
            Opt.MESSAGE_TYPE: bytes([MessageType.DISCOVER]),
            Opt.VENDOR_CLASS: b"PXEClient:Arch:00000:UNDI:002001",
            Opt.CLIENT_ARCH: b"\x00\x00",
        },
    )  # fmt: skip
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        sock.sendto(discover.encode(), ("127.0.0.1", served.ports["dhcp"]))
        offer = parse(sock.recvfrom(4096)[0])
    assert offer.xid == 0x1234ABCD
    assert offer.file == "undionly.kpxe"


def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    run = start(tmp_path)
    code, out, err = stop(run)
    assert code == 0, err
    assert "serving 127.0.0.1" in out and "stopped" in out
    assert "Traceback" not in err


def test_port_in_use_stops_everything_with_a_message(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = [
            sys.executable, "-m", "provision", "serve", "--address", "127.0.0.1", "--state-dir", str(tmp_path),
            "--boot-root", str(tmp_path), "--http-port", str(port), "--tftp-port", "0", "--dhcp", "off",
        ]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert f"provision: error: http: 127.0.0.1:{port} is already in use" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_interface_is_fatal(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "provision", "serve", "--interface", "nope0", "--state-dir", str(tmp_path)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "interface 'nope0' does not exist" in proc.stderr


def test_firstboot_callback_of_an_unknown_machine_is_refused(served: Running) -> None:
    """A first-boot callback proves its run with the run's secret (tests/functional/test_tokens.py); from a MAC
    the server never saw it is refused and makes no machine record (issue 12, defect 3)."""
    body = {
        "event": "firstboot", "mac": "52-54-00-12-34-99", "image": "tiny", "label": "tiny-41936d48a27f",
        "firmware": "uefi", "secure_boot": True, "machine_id": "0" * 32, "secret": "ab" * 32,
    }  # fmt: skip
    r = requests.post(f"{served.url}/api/v1/firstboot", json=body, timeout=5)
    assert r.status_code == 404, r.text
    assert requests.get(f"{served.url}/api/v1/machines", timeout=5).json() == []
    bad = requests.post(f"{served.url}/api/v1/firstboot", json={**body, "event": "reimage-me"}, timeout=5)
    assert bad.status_code == 422


def test_defect5_malformed_http_is_a_400_and_a_warning_line_not_a_traceback(tmp_path: Path) -> None:
    """aiohttp answers malformed HTTP 400 itself; it used to log each as an ERROR with a traceback."""
    run = start(tmp_path)
    malformed = [
        b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /api/v1/hello HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ]
    try:
        for data in malformed:
            with socket.create_connection(("127.0.0.1", run.ports["http"]), timeout=5) as sock:
                sock.sendall(data)
                assert sock.recv(64).startswith(b"HTTP/1.0 400"), data[:40]
        assert requests.get(f"{run.url}/healthz", timeout=5).status_code == 200
    finally:
        code, _, err = stop(run)
    assert code == 0 and "Traceback" not in err and " ERROR " not in err, err[-2000:]
    assert err.count("malformed HTTP request answered 400") == len(malformed), err[-2000:]
