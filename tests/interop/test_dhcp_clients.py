"""Real DHCP clients (busybox udhcpc, ISC dhclient) playing PXE clients against a real `provision serve`.

The server runs in a lab namespace (`provision.lab.netns.Lab`: bridge br0, 198.18.0.1/24) as
``python -m provision serve --interface br0``; every client runs in its own namespace whose ``eth0`` is a
veth pair into br0 (`netns_hosts.Host`). The clients pretend to be PXE ROMs through their options: vendor
class (60) ``PXEClient:Arch:...`` or ``HTTPClient:...``, client architecture (93), user class (77) ``iPXE``.

- full mode: each client gets an address of the configured range and the boot file of its kind, as the
  client itself records it (udhcpc's script environment, dhclient's lease file) and as captured on the wire;
  that file can then be fetched (TFTP or HTTP, with curl) from the leased address; the address is sticky.
- proxy mode: dnsmasq on another host (198.18.0.2, no boot options) leases the addresses, provision answers
  the same DISCOVERs with address-less proxy offers. The clients are no PXE ROMs and cannot use those (both
  even select one when it comes first: see run_udhcpc and run_dhclient), so the offers are captured in the
  client namespace with a raw socket and checked against the client's own DISCOVER; then a DHCPREQUEST is
  sent to port 4011 the way a PXE ROM does, from the leased address.
- provision answers on its interface only: a DISCOVER reaching another interface of the server is ignored.

Needs root, `ip`, and the Debian packages udhcpc, isc-dhcp-client, dnsmasq and curl; a test whose tool is
missing is skipped.
Everything (namespaces, veths, processes) is removed by PID and name when a test or the module ends.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from provision.dhcp import PXE_VENDOR_OPTIONS, DhcpPacket, MalformedPacket, MessageType, Opt, client_request, parse
from provision.lab.host import LabUnavailable
from provision.lab.netns import Lab
from tests.support.netns_hosts import Capture, Frame, Host, stop_process
from tests.support.paths import REPO
from tests.support.wait import wait_for

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs ip (Debian package iproute2)"),
]

SERVER = "198.18.0.1"  # provision, on br0 of the lab namespace
SITE = "198.18.0.2"  # the site's DHCP server (dnsmasq) in proxy mode
LAN2 = "198.18.1.1/24"  # a second interface of the server namespace, not on br0
HTTP_PORT = 8080
LEASE_SECONDS = 300
FULL_RANGE = (IPv4Address("198.18.0.100"), IPv4Address("198.18.0.149"))
SITE_RANGE = (IPv4Address("198.18.0.150"), IPv4Address("198.18.0.199"))
ZERO = IPv4Address(0)
CLIENT_TIMEOUT = 20.0  # seconds a client may take to get a lease
PACKAGES = {"udhcpc": "udhcpc", "dhclient": "isc-dhcp-client", "dnsmasq": "dnsmasq", "curl": "curl"}

_macs = itertools.count(1)


def new_mac() -> str:
    n = next(_macs)
    return f"52:54:00:dc:{n >> 8:02x}:{n & 0xFF:02x}"


def need(binary: str) -> None:
    if shutil.which(binary) is None:
        pytest.skip(f"{binary} not installed (Debian package {PACKAGES[binary]})")


# ------------------------------------------------------------------------------------------- client kinds
@dataclass(frozen=True)
class Kind:
    """What a client claims to be, and what provision must answer."""

    name: str
    vendor_class: str | None  # option 60 sent; None: the client's own (udhcpc) or none (dhclient)
    arch: int | None  # option 93 sent
    ipxe: bool = False  # user class "iPXE" sent
    boot_file: str | None = None  # expected in the `file` field; None: no boot answer
    answer_class: bytes | None = None  # expected option 60 of the answer
    option43: bool = False  # expected PXE vendor options (discovery control)


KINDS = [
    Kind("bios", "PXEClient:Arch:00000:UNDI:002001", 0, False, "undionly.kpxe", b"PXEClient", True),
    Kind("uefi", "PXEClient:Arch:00007:UNDI:003016", 7, False, "shimx64.efi", b"PXEClient"),
    Kind(
        "uefi-http",
        "HTTPClient:Arch:00016:UNDI:003001",
        16,
        False,
        f"http://{SERVER}:{HTTP_PORT}/files/shimx64.efi",
        b"HTTPClient",
    ),
    Kind(
        "ipxe",
        "PXEClient:Arch:00000:UNDI:002001",
        0,
        True,
        f"http://{SERVER}:{HTTP_PORT}/boot/${{mac}}.ipxe",  # a literal ${mac}, expanded by iPXE
        b"PXEClient",
        True,
    ),
    Kind("plain", None, None),
]
BIOS, PLAIN = KINDS[0], KINDS[-1]


# ------------------------------------------------------------------------------------------------ clients
@dataclass(frozen=True)
class ClientResult:
    """A lease as the client recorded it."""

    address: str
    server_id: str
    lease_time: int
    boot_file: str | None
    next_server: str | None
    vendor_class: str | None  # option 60 of the answer
    details: str  # what the client wrote, for assertion messages


Client = Callable[[Host, Kind, Path, bool], ClientResult | None]


def _env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key: value for key, value in pairs if key not in os.environ}


def _dump_script(path: Path, out: Path, condition: str) -> None:
    """A client script that writes its environment to ``out`` (atomically) when ``condition`` holds."""
    path.write_text(f'#!/bin/sh\nif {condition}; then env > "{out}.tmp" && mv "{out}.tmp" "{out}"; fi\nexit 0\n')
    path.chmod(0o755)


def udhcpc_options(kind: Kind) -> list[str]:
    options = ["-V", kind.vendor_class] if kind.vendor_class else []
    if kind.arch is not None:
        options += ["-x", f"0x5d:{kind.arch:04x}"]
    if kind.ipxe:
        options += ["-x", "0x4d:" + b"iPXE".hex()]
    return options


def run_udhcpc(host: Host, kind: Kind, workdir: Path, proxy_offers: bool = False) -> ClientResult | None:
    """udhcpc once (up to 3 DISCOVERs, 1 s apart); the environment its script sees on 'bound'.

    udhcpc takes the first offer it receives, even a proxy offer without an address: it is no PXE client.
    It then REQUESTs 0.0.0.0 three times and fails. With ``proxy_offers`` (a proxyDHCP server is on the
    LAN) that choice ends the run at once and the result is None. Which offer comes first is a race that
    provision, being on the same bridge and idle, mostly wins.
    """
    need("udhcpc")
    out, log, script = workdir / "udhcpc.env", workdir / "udhcpc.log", workdir / "udhcpc.sh"
    _dump_script(script, out, '[ "$1" = bound ]')
    argv = ["udhcpc", "-i", host.iface, "-f", "-q", "-n", "-t", "3", "-T", "1", "-s", str(script)]
    proc = host.popen([*argv, *udhcpc_options(kind)], log)

    def selected_proxy_offer() -> bool:
        return proxy_offers and "select for 0.0.0.0," in log.read_text()

    try:
        wait_for(lambda: out.exists() or proc.poll() is not None or selected_proxy_offer(), CLIENT_TIMEOUT)
    finally:
        host.stop(proc)
    if not out.exists() and selected_proxy_offer():
        return None
    assert out.exists(), f"udhcpc got no lease:\n{log.read_text()}"
    env = _env_file(out)
    return ClientResult(
        address=env["ip"],
        server_id=env["serverid"],
        lease_time=int(env["lease"]),
        boot_file=env.get("boot_file"),
        next_server=env.get("siaddr"),
        vendor_class=env.get("vendor"),
        details=json.dumps(env, indent=1, sort_keys=True),
    )


def _dhclient_lease(text: str) -> dict[str, str]:
    """The last ``lease { ... }`` of a dhclient lease file: 'filename', 'fixed-address', option names."""
    fields = {}
    for line in text.rpartition("lease {")[2].splitlines():
        line = line.strip().removesuffix(";")
        if line and line != "}":
            key, _, value = line.removeprefix("option ").partition(" ")
            fields[key] = value.removeprefix('"').removesuffix('"')
    return fields


def run_dhclient(host: Host, kind: Kind, workdir: Path, proxy_offers: bool = False) -> ClientResult | None:
    """dhclient -1 in the foreground until its script sees BOUND; the lease from its lease file."""
    need("dhclient")
    conf = workdir / "dhclient.conf"
    lines = ["option pxe-arch code 93 = unsigned integer 16;"]
    if kind.arch is not None:
        lines.append(f"send pxe-arch {kind.arch};")
    if kind.vendor_class:
        lines.append(f'send vendor-class-identifier "{kind.vendor_class}";')
    if kind.ipxe:
        lines.append('send user-class "iPXE";')
    lines += [
        "request subnet-mask, routers, domain-name-servers, vendor-class-identifier, tftp-server-name, bootfile-name;",
        # Without it dhclient selects provision's proxy offer (no address, no mask) when it comes first,
        # REQUESTs 0.0.0.0 for ~13 s and only then takes the site server's offer.
        "require subnet-mask;",
        "timeout 10;",
        "retry 1;",
        "initial-interval 1;",
    ]
    conf.write_text("\n".join(lines) + "\n")
    out, leases, log = workdir / "dhclient.env", workdir / "dhclient.leases", workdir / "dhclient.log"
    script = workdir / "dhclient.sh"
    _dump_script(script, out, '[ "$reason" = BOUND ]')
    argv = ["dhclient", "-4", "-d", "-1", "-v", "-cf", str(conf), "-lf", str(leases), "-pf", str(workdir / "pid")]
    proc = host.popen([*argv, "-sf", str(script), host.iface], log)
    try:
        wait_for(lambda: out.exists() or proc.poll() is not None, CLIENT_TIMEOUT)

        def lease_written() -> bool:  # the script runs before the lease is written to the lease file
            text = leases.read_text() if leases.exists() else ""
            return "fixed-address" in text and text.rstrip().endswith("}")

        if out.exists():
            wait_for(lease_written, 5.0)
    finally:
        host.stop(proc)
    assert out.exists(), f"dhclient got no lease:\n{log.read_text()}"
    lease = _dhclient_lease(leases.read_text())
    env = _env_file(out)
    return ClientResult(
        address=lease["fixed-address"],
        server_id=lease["dhcp-server-identifier"],
        lease_time=int(lease["dhcp-lease-time"]),
        boot_file=lease.get("filename"),  # dhclient refuses to pass "${mac}" to its script: read the file
        next_server=None if env.get("new_next_server") in (None, "0.0.0.0") else env["new_next_server"],
        vendor_class=lease.get("vendor-class-identifier"),
        details=leases.read_text() + log.read_text(),
    )


CLIENTS = [pytest.param(run_udhcpc, id="udhcpc"), pytest.param(run_dhclient, id="dhclient")]


# ------------------------------------------------------------------------------------------------ servers
@dataclass
class Lan:
    """A lab namespace with `provision serve` on br0 (and, in proxy mode, a dnsmasq host beside it)."""

    lab: Lab
    mode: str
    proc: subprocess.Popen[bytes]
    state: Path
    boot_root: Path

    @property
    def namespace(self) -> str:
        return self.lab.name

    def log(self) -> str:
        return self.lab.log_path("serve").read_text(errors="replace")

    def leases(self) -> dict[str, str]:
        """MAC -> address of the lease file (written behind the answers, up to ~0.5 s later)."""
        path = self.state / "leases.json"
        data = json.loads(path.read_text()) if path.exists() else {"leases": []}
        return {lease["mac"]: lease["ip"] for lease in data["leases"]}


@contextlib.contextmanager
def lab_or_skip() -> Iterator[Lab]:
    lab = Lab()
    try:
        lab.start()
    except LabUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield lab
    finally:
        lab.close()


@contextlib.contextmanager
def serve(lab: Lab, mode: str, workdir: Path) -> Iterator[Lan]:
    """`provision serve` in the lab namespace on br0, ports 67/4011/69 and HTTP_PORT; SIGTERM at the end."""
    boot = workdir / "boot"
    boot.mkdir()
    (boot / "undionly.kpxe").write_bytes(b"undionly" * 100)
    (boot / "shimx64.efi").write_bytes(b"shim" * 100)
    config = workdir / "provision.yaml"
    dhcp = {"mode": mode, "lease_seconds": LEASE_SECONDS}
    if mode == "full":
        dhcp |= {"range_start": str(FULL_RANGE[0]), "range_end": str(FULL_RANGE[1]), "netmask": "255.255.255.0"}
        dhcp["router"] = SERVER
    config.write_text(json.dumps({"dhcp": dhcp}))  # JSON is YAML
    ready, state = workdir / "ready.json", workdir / "state"
    argv = [sys.executable, "-m", "provision", "--debug", "serve", "--interface", "br0", "--address", SERVER]
    argv += ["--dhcp", mode, "--state-dir", str(state), "--boot-root", str(boot), "--config", str(config)]
    argv += ["--http-port", str(HTTP_PORT), "--ready-file", str(ready)]
    proc = lab.popen(argv, log_name="serve", cwd=REPO)
    lan = Lan(lab, mode, proc, state, boot)
    try:
        started = wait_for(lambda: ready.exists() or proc.poll() is not None, 30)
        assert started and proc.poll() is None, f"provision serve did not start:\n{lan.log()}"
        time.sleep(0.1)  # the ready file may be written as a late failure stops the server
        assert proc.poll() is None, f"provision serve stopped:\n{lan.log()}"
        ports = json.loads(ready.read_text())
        assert (ports["dhcp"], ports["proxy"], ports["http"]) == (67, 4011, HTTP_PORT), ports
        yield lan
    finally:
        stop_process(proc, timeout=10)  # SIGTERM: a clean stop


@pytest.fixture(scope="module")
def full_lan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lan]:
    with lab_or_skip() as lab, serve(lab, "full", tmp_path_factory.mktemp("full")) as lan:
        yield lan


@pytest.fixture(scope="module")
def proxy_lan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lan]:
    """provision in proxy mode, and the site's DHCP server: dnsmasq on its own host, no boot options."""
    need("dnsmasq")
    workdir = tmp_path_factory.mktemp("proxy")
    with lab_or_skip() as lab, Host(lab.name, mac=new_mac(), cidr=f"{SITE}/24", workdir=workdir / "site") as site:
        pid_file = workdir / "dnsmasq.pid"
        argv = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--bind-interfaces"]
        argv += [f"--interface={site.iface}", "--port=0", "--no-ping", f"--dhcp-range={SITE_RANGE[0]},{SITE_RANGE[1]}"]
        argv += [f"--dhcp-leasefile={workdir / 'dnsmasq.leases'}", f"--pid-file={pid_file}", "--log-dhcp"]
        argv += ["--log-facility=-"]
        dnsmasq = site.popen(argv, workdir / "dnsmasq.log")
        try:
            started = wait_for(lambda: pid_file.exists() or dnsmasq.poll() is not None, 10)
            assert started and dnsmasq.poll() is None, (workdir / "dnsmasq.log").read_text()
            with serve(lab, "proxy", workdir) as lan:
                yield lan
        finally:
            site.stop(dnsmasq)  # by its PID (ip netns exec runs it in place)


# ------------------------------------------------------------------------------------------------- checks
def dhcp_packets(frames: list[Frame], mac: str) -> list[tuple[Frame, DhcpPacket]]:
    """The captured DHCP packets about ``mac`` (requests it sent, replies to it)."""
    packets = []
    for frame in frames:
        try:
            packet = parse(frame.payload)
        except MalformedPacket as exc:
            raise AssertionError(f"unparsable DHCP packet from {frame.src}: {exc}") from None
        if packet.mac == mac:
            packets.append((frame, packet))
    return packets


def sent(packets: list[tuple[Frame, DhcpPacket]], mtype: MessageType) -> list[DhcpPacket]:
    return [p for f, p in packets if f.outgoing and f.dport == 67 and p.message_type is mtype]


def replies_from(packets: list[tuple[Frame, DhcpPacket]], source: str) -> list[tuple[Frame, DhcpPacket]]:
    return [(f, p) for f, p in packets if not f.outgoing and f.src == source]


def check_request(discover: DhcpPacket, kind: Kind) -> None:
    """The client really sent what the kind says (else the test, not the server, is wrong)."""
    vendor = discover.vendor_class or b""
    if kind.vendor_class:
        assert vendor == kind.vendor_class.encode()
    else:
        assert not vendor.startswith((b"PXEClient", b"HTTPClient")), vendor
    assert discover.client_arches == (() if kind.arch is None else (kind.arch,))
    assert (b"iPXE" in discover.user_classes) is kind.ipxe


def check_boot_answer(reply: DhcpPacket, kind: Kind) -> None:
    """provision's boot information in a reply, or its absence for a non-PXE client."""
    assert reply.op == 2 and reply.server_id == IPv4Address(SERVER)
    if kind.boot_file is None:
        assert (reply.file, reply.sname, reply.siaddr) == ("", "", ZERO)
        assert Opt.VENDOR_CLASS not in reply.options and Opt.VENDOR_SPECIFIC not in reply.options
        return
    assert reply.file == kind.boot_file
    assert (reply.siaddr, reply.sname) == (IPv4Address(SERVER), SERVER)
    assert reply.option(Opt.VENDOR_CLASS) == kind.answer_class
    assert reply.option(Opt.VENDOR_SPECIFIC) == (PXE_VENDOR_OPTIONS if kind.option43 else None)


def in_range(address: str, bounds: tuple[IPv4Address, IPv4Address]) -> bool:
    return bounds[0] <= IPv4Address(address) <= bounds[1]


# -------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.name)
@pytest.mark.parametrize("client", CLIENTS)
def test_full_mode_lease_and_boot_file(full_lan: Lan, client: Client, kind: Kind, tmp_path: Path) -> None:
    host = Host(full_lan.namespace, mac=new_mac(), workdir=tmp_path)
    with host, Capture(host.name, host.iface, tmp_path / "frames") as capture:
        result = client(host, kind, tmp_path, False)
    assert result is not None
    packets = dhcp_packets(capture.frames, host.mac)
    discovers = sent(packets, MessageType.DISCOVER)
    assert discovers, capture.frames
    check_request(discovers[0], kind)

    # What the client made of it.
    why = f"{result.details}\n--- server log:\n{full_lan.log()[-3000:]}"
    assert in_range(result.address, FULL_RANGE), why
    assert (result.server_id, result.lease_time) == (SERVER, LEASE_SECONDS), why
    assert result.boot_file == kind.boot_file, why
    assert result.next_server == (SERVER if kind.boot_file else None), why
    assert result.vendor_class == (kind.answer_class.decode() if kind.answer_class else None), why
    assert wait_for(lambda: full_lan.leases().get(host.mac) == result.address, 3.0), full_lan.leases()

    # What provision sent: an OFFER and an ACK of that address, broadcast, in the client's transaction.
    answers = replies_from(packets, SERVER)
    assert [p.message_type for _, p in answers] == [MessageType.OFFER, MessageType.ACK], answers
    xids = {p.xid for p in discovers + sent(packets, MessageType.REQUEST)}
    for frame, reply in answers:
        assert (frame.dst, frame.sport, frame.dport) == ("255.255.255.255", 67, 68)
        assert reply.xid in xids and reply.yiaddr == IPv4Address(result.address)
        assert reply.option(Opt.SUBNET_MASK) == IPv4Address("255.255.255.0").packed
        assert reply.option(Opt.ROUTER) == IPv4Address(SERVER).packed
        check_boot_answer(reply, kind)


@pytest.mark.parametrize("kind", KINDS[:-1], ids=lambda kind: kind.name)
def test_full_mode_boot_file_can_be_fetched(full_lan: Lan, kind: Kind, tmp_path: Path) -> None:
    """The boot file a client is given is served at that place: TFTP from siaddr, or the HTTP URL."""
    need("curl")
    with Host(full_lan.namespace, mac=new_mac(), workdir=tmp_path) as host:
        lease = run_udhcpc(host, kind, tmp_path)
        assert lease is not None and lease.boot_file is not None
        host.set_address(f"{lease.address}/24")
        if lease.boot_file.startswith("http://"):
            url = lease.boot_file.replace("${mac}", host.mac)  # what iPXE does
        else:
            url = f"tftp://{lease.next_server}/{lease.boot_file}"
        done = host.run(["curl", "-sS", "--fail", "--max-time", "10", url], timeout=20)
    assert done.returncode == 0, f"{url}: {done.stderr}"
    if kind.ipxe:
        assert done.stdout.startswith("#!ipxe"), done.stdout
    else:
        assert done.stdout == (full_lan.boot_root / url.rpartition("/")[2]).read_text()


def test_full_mode_address_is_sticky(full_lan: Lan, tmp_path: Path) -> None:
    """The same PC (MAC) gets its address back, first as a plain client, then booting."""
    with Host(full_lan.namespace, mac=new_mac(), workdir=tmp_path) as host:
        (tmp_path / "plain").mkdir()
        (tmp_path / "bios").mkdir()
        plain = run_udhcpc(host, PLAIN, tmp_path / "plain")
        booting = run_udhcpc(host, BIOS, tmp_path / "bios")
    assert plain is not None and booting is not None
    assert booting.address == plain.address and plain.boot_file is None
    assert booting.boot_file == "undionly.kpxe"
    log = full_lan.log()
    assert f"{host.mac}: ack {plain.address} for {LEASE_SECONDS} s, boot undionly.kpxe -> 255.255.255.255:68" in log


def pxe_rom_request(mac: str, address: str, kind: Kind, xid: int) -> DhcpPacket:
    """The DHCPREQUEST a PXE ROM sends to port 4011 of the proxyDHCP server once it has an address."""
    options: dict[int, bytes] = {
        Opt.PARAMETER_REQUEST_LIST: bytes([1, 3, 43, 60, 66, 67, 97, *range(128, 136)]),
        Opt.MAX_MESSAGE_SIZE: (1472).to_bytes(2, "big"),
        Opt.CLIENT_NDI: bytes([1, 2, 1]),
        Opt.CLIENT_MACHINE_ID: bytes(1) + bytes(range(16)),
    }
    if kind.arch is not None:
        options[Opt.CLIENT_ARCH] = kind.arch.to_bytes(2, "big")
    if kind.vendor_class:
        options[Opt.VENDOR_CLASS] = kind.vendor_class.encode()
    if kind.ipxe:
        options[Opt.USER_CLASS] = b"iPXE"
    return client_request(MessageType.REQUEST, mac, xid=xid, ciaddr=IPv4Address(address), options=options)


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.name)
@pytest.mark.parametrize("client", CLIENTS)
def test_proxy_mode_beside_dnsmasq(proxy_lan: Lan, client: Client, kind: Kind, tmp_path: Path) -> None:
    host = Host(proxy_lan.namespace, mac=new_mac(), workdir=tmp_path)
    with host:
        with Capture(host.name, host.iface, tmp_path / "frames") as capture:
            result = client(host, kind, tmp_path, True)

            def answered() -> bool:  # both servers' offers are in (one may come after the client is done)
                sources = {f.src for f, p in dhcp_packets(capture.read(), host.mac) if not f.outgoing}
                return SITE in sources and (SERVER in sources or kind.boot_file is None)

            wait_for(answered, 2.0)
        packets = dhcp_packets(capture.frames, host.mac)
        why = f"{result.details if result else ''}\n--- server log:\n{proxy_lan.log()[-3000:]}"
        if result is None:
            # udhcpc selected provision's address-less offer (see run_udhcpc), REQUESTing it from provision,
            # which ignores REQUESTs on port 67 in proxy mode. The address is the one dnsmasq offered.
            requests = sent(packets, MessageType.REQUEST)
            assert requests and requests[0].server_id == IPv4Address(SERVER), why
            site_offers = [p for f, p in replies_from(packets, SITE) if p.message_type is MessageType.OFFER]
            assert site_offers, why
            address = str(site_offers[0].yiaddr)
        else:
            # The address (and nothing else) from the site's DHCP server.
            assert result.server_id == SITE and result.boot_file is None, why
            address = result.address
        assert in_range(address, SITE_RANGE), why

        # Then, like a PXE ROM: a DHCPREQUEST to port 4011 from the address the site server gave.
        host.set_address(f"{address}/24")
        request = pxe_rom_request(host.mac, address, kind, xid=0x4011_0000 + next(_macs))
        replies = host.exchange((address, 68), (SERVER, 4011), request.encode(), 2.0 if kind.boot_file else 1.0)

    # provision's proxy offers to this client's DISCOVERs: no address, the boot file of its kind.
    discovers = sent(packets, MessageType.DISCOVER)
    assert discovers
    check_request(discovers[0], kind)
    offers = replies_from(packets, SERVER)
    if kind.boot_file is None:
        assert offers == [], why
    else:
        assert offers, why
    for frame, offer in offers:
        assert (frame.dst, frame.sport, frame.dport) == ("255.255.255.255", 67, 68)
        assert offer.message_type is MessageType.OFFER
        assert offer.xid in {d.xid for d in discovers}
        assert (offer.yiaddr, offer.ciaddr) == (ZERO, ZERO)
        assert Opt.LEASE_TIME not in offer.options and Opt.SUBNET_MASK not in offer.options
        check_boot_answer(offer, kind)

    # provision's ACK on port 4011, back to the PXE ROM's address and port.
    if kind.boot_file is None:
        assert replies == [], why
        return
    assert [(host_, port) for host_, port, _ in replies] == [(SERVER, 4011)], why
    ack = parse(replies[0][2])
    assert ack.message_type is MessageType.ACK and ack.xid == request.xid and ack.mac == host.mac
    assert (ack.ciaddr, ack.yiaddr) == (IPv4Address(address), ZERO)
    check_boot_answer(ack, kind)
    assert ack.option(Opt.CLIENT_MACHINE_ID) == request.option(Opt.CLIENT_MACHINE_ID)
    assert ack.option(Opt.BOOTFILE_NAME) == f"{kind.boot_file}\0".encode()
    assert ack.option(Opt.TFTP_SERVER_NAME) == f"{SERVER}\0".encode()


@pytest.mark.parametrize("mode", ["full", "proxy"])
def test_answers_only_on_its_interface(mode: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """With --interface br0, a PXE DISCOVER arriving on another interface of the server gets no answer."""
    need("udhcpc")
    lan: Lan = request.getfixturevalue(f"{mode}_lan")
    other = Host(lan.namespace, mac=new_mac(), bridge=None, peer="lan2", server_cidr=LAN2, workdir=tmp_path / "lan2")
    udhcpc = ["udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "2", "-T", "1", "-s", "/bin/true", *udhcpc_options(BIOS)]
    with (
        other,
        Capture(lan.namespace, "lan2", tmp_path / "server-frames") as at_server,
        Capture(other.name, other.iface, tmp_path / "client-frames") as at_client,
    ):
        done = other.run(udhcpc, timeout=CLIENT_TIMEOUT)
    assert done.returncode != 0, done.stderr
    assert "no lease" in done.stderr
    arrived = [p for f, p in dhcp_packets(at_server.frames, other.mac) if not f.outgoing]
    assert len(arrived) >= 2 and all(p.message_type is MessageType.DISCOVER for p in arrived)
    assert [f for f in at_server.frames if f.outgoing] == []  # nothing left the server on lan2
    assert [f for f in at_client.frames if not f.outgoing] == []
    assert other.mac not in lan.log()  # provision never even saw the packets

    # The same client on br0 is answered (the server was listening all along).
    host = Host(lan.namespace, mac=other.mac, workdir=tmp_path / "br0")
    with host, Capture(host.name, host.iface, tmp_path / "br0-frames") as capture:
        proc = host.popen(udhcpc, tmp_path / "udhcpc.log")
        wait_for(lambda: replies_from(dhcp_packets(capture.read(), host.mac), SERVER), 5.0)
        host.stop(proc)
    answers = replies_from(dhcp_packets(capture.frames, host.mac), SERVER)
    assert answers and answers[0][1].message_type is MessageType.OFFER
    check_boot_answer(answers[0][1], BIOS)
