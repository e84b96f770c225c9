"""PXE policy: which boot file a network-booting PC gets, and the same policy as other DHCP servers' config.

The table (RFC 4578 client architecture, option 93, with the IANA additions):

| client                                   | boot file                                   | option 60    | option 43 |
|------------------------------------------|---------------------------------------------|--------------|-----------|
| user class "iPXE" (any arch)             | `ipxe_script_url` (HTTP, `${mac}` for iPXE) | "PXEClient"  | yes       |
| arch 0, x86 BIOS                         | `bios_file` (undionly.kpxe)                 | "PXEClient"  | yes       |
| arch 6, 7, 9, EFI IA32 / x86-64          | shimx64.efi, or snponly.efi when `ipxe`     | "PXEClient"  | no        |
| arch 16, EFI x86-64 HTTP boot            | `http_boot_url` of the UEFI file            | "HTTPClient" | no        |
| anything else, or no option 60           | nothing (the client is ignored)             |              |           |

Option 43 (`PXE_VENDOR_OPTIONS`) is sent where pixiecore sends it: BIOS PXE ROMs and iPXE. UEFI clients get
none and, as pixiecore found empirically, ask again on port 4011, where the same answer is given; some UEFI
firmwares ignore a proxy offer that tries to switch boot-server discovery off.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Literal

from provision.dhcp.packet import DhcpPacket, Opt
from provision.errors import FatalError

BIOS_ARCH = 0
UEFI_ARCHES = frozenset({6, 7, 9})  # 6 is 32-bit EFI: it cannot run shimx64.efi, served anyway as asked
HTTP_ARCH = 16  # EFI x86-64 HTTP boot

#: Option 43 for BIOS PXE ROMs and iPXE: PXE sub-option 6 (PXE_DISCOVERY_CONTROL) = 8, i.e. bit 3 "a boot
#: file name is in this packet: download it, no boot server discovery, no menu"; then sub-option 255 (end).
#: pixiecore sends exactly this, and dnsmasq sends discovery control 8 when it has no PXE menu.
PXE_VENDOR_OPTIONS = bytes((6, 1, 8, 255))

PXE_CLIENT = b"PXEClient"
HTTP_CLIENT = b"HTTPClient"

UefiLoader = Literal["shim", "ipxe"]
SnippetKind = Literal["dnsmasq", "isc", "kea"]


class DhcpSettingsError(FatalError, ValueError):
    """A DHCP/PXE setting that cannot work; carries the setting's name as `key`."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"dhcp setting {key}: {message}", key=key)
        self.key = key


def always_boot(mac: str) -> bool:
    """The default `boot_allowed` hook: every machine may be network-booted."""
    return True


def never_chain(mac: str, xid: int, ipxe: bool) -> bool:
    """The default `chain_ipxe` hook: an iPXE client always gets its boot script."""
    return False


def _printable_ascii(text: str) -> bool:
    return text.isascii() and text.isprintable() and " " not in text


def _check_file(key: str, name: str) -> None:
    if not name or len(name) > 127 or not _printable_ascii(name):
        raise DhcpSettingsError(key, f"{name!r} is not a boot file name (1..127 printable ASCII, no space)")


@dataclass(frozen=True)
class PxeSettings:
    """What the PXE answers point at: this server's address, its HTTP port, the boot files.

    `boot_allowed(mac)` is asked before answering a PXE client (the pixiecore "Booter" seam): False means do not
    network-boot this machine (in full mode it still gets an address). It may raise; the packet is dropped.
    """

    server_ip: IPv4Address
    http_port: int
    bios_file: str = "undionly.kpxe"
    uefi_file: str = "shimx64.efi"  # Secure Boot capable: shim -> signed GRUB
    uefi_loader: UefiLoader = "shim"
    ipxe_uefi_file: str = "snponly.efi"  # used when uefi_loader is "ipxe" (unsigned: Secure Boot off)
    http_boot_url: str = "http://{server}:{port}/files/{file}"  # the boot root, served by provision's HTTP
    ipxe_script_url: str = "http://{server}:{port}/boot/${{mac}}.ipxe"  # iPXE expands ${mac} itself
    boot_allowed: Callable[[str], bool] = field(default=always_boot, compare=False, repr=False)
    # Asked with (mac, xid, is_ipxe) for every PXE client about to be answered: for an iPXE client, True
    # hands it the architecture's boot file (undionly.kpxe over TFTP) instead of its script, as a vendor PXE
    # ROM would get. For iPXE NIC ROMs (QEMU, flashed NICs) when the real chain must be exercised: the
    # server answers True for the first DHCP exchange of a boot unless a vendor ROM just got a boot file.
    chain_ipxe: Callable[[str, int, bool], bool] = field(default=never_chain, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.server_ip, IPv4Address) or self.server_ip.is_unspecified:
            raise DhcpSettingsError("server_ip", f"{self.server_ip!r} is not a usable IPv4 address")
        if not 1 <= self.http_port <= 65535:
            raise DhcpSettingsError("http_port", f"{self.http_port} is not a TCP port (give the bound port)")
        if self.uefi_loader not in ("shim", "ipxe"):
            raise DhcpSettingsError("uefi_loader", f"{self.uefi_loader!r} is not 'shim' or 'ipxe'")
        for key in ("bios_file", "uefi_file", "ipxe_uefi_file"):
            _check_file(key, getattr(self, key))
        for key in ("http_boot_url", "ipxe_script_url"):
            url = self._url(key)
            if not url.startswith(("http://", "https://")) or len(url) > 250 or not _printable_ascii(url):
                raise DhcpSettingsError(key, f"{url!r} is not an HTTP URL of at most 250 ASCII characters")

    def _url(self, key: str) -> str:
        template: str = getattr(self, key)
        try:
            return template.format(server=self.server_ip, port=self.http_port, file=self.uefi_boot_file)
        except (KeyError, IndexError, ValueError) as exc:
            raise DhcpSettingsError(
                key, f"{template!r} does not format with {{server}}, {{port}}, {{file}}: {exc!r}"
            ) from None

    @property
    def uefi_boot_file(self) -> str:
        return self.ipxe_uefi_file if self.uefi_loader == "ipxe" else self.uefi_file

    @property
    def ipxe_script(self) -> str:
        """The boot file of iPXE clients: e.g. http://198.18.0.1:8080/boot/${mac}.ipxe (literal ${mac})."""
        return self._url("ipxe_script_url")

    @property
    def http_boot_file(self) -> str:
        """The boot URL of UEFI HTTP boot clients (arch 16)."""
        return self._url("http_boot_url")


class BootKind(enum.StrEnum):
    BIOS = "bios"
    UEFI = "uefi"
    UEFI_HTTP = "uefi-http"
    IPXE = "ipxe"


class Skip(enum.StrEnum):
    """Why a client gets no boot information."""

    NOT_PXE = "not a PXE or HTTP boot client (option 60 is not PXEClient/HTTPClient)"
    UNKNOWN_ARCH = "unsupported client architecture"
    DECLINED = "not to be network-booted (boot_allowed() said no)"


@dataclass(frozen=True)
class BootAnswer:
    kind: BootKind
    arch: int | None
    boot_file: str  # a TFTP path, or an HTTP URL
    vendor_class: bytes  # option 60 of the answer
    pxe_options: bytes | None  # option 43 of the answer


@dataclass(frozen=True)
class BootFields:
    """What a reply carries for a booting client: header fields and options (60, 97, 43, 66, 67)."""

    siaddr: IPv4Address
    sname: str
    file: str
    options: dict[int, bytes]


def client_arch(packet: DhcpPacket) -> int | None:
    """Option 93 (first, most preferred), else the "Arch:NNNNN" of option 60 (PXE 2.1 ROMs send both)."""
    if packet.client_arches:
        return packet.client_arches[0]
    vendor = packet.vendor_class or b""
    parts = vendor.split(b":")
    if len(parts) >= 3 and parts[1] == b"Arch" and parts[2].isdigit() and len(parts[2]) == 5:
        return int(parts[2])
    return None


def is_ipxe(packet: DhcpPacket) -> bool:
    return b"iPXE" in packet.user_classes


def boot_answer(packet: DhcpPacket, settings: PxeSettings) -> BootAnswer | Skip:
    """The boot answer for a request, or why there is none.

    `settings.boot_allowed` is asked once the client is known to be bootable, and before `settings.chain_ipxe`,
    which is told about every PXE client it may answer (a vendor ROM being handed a boot file means the iPXE
    that follows was chained, not a NIC ROM)."""
    vendor = packet.vendor_class or b""
    http = vendor.startswith(HTTP_CLIENT)
    if not (http or vendor.startswith(PXE_CLIENT)):
        return Skip.NOT_PXE
    arch = client_arch(packet)
    ipxe = is_ipxe(packet)
    if not ipxe and arch not in (BIOS_ARCH, HTTP_ARCH, *UEFI_ARCHES):
        return Skip.UNKNOWN_ARCH
    if not settings.boot_allowed(packet.mac):
        return Skip.DECLINED
    chained = settings.chain_ipxe(packet.mac, packet.xid, ipxe)
    if ipxe and not chained:
        return BootAnswer(BootKind.IPXE, arch, settings.ipxe_script, PXE_CLIENT, PXE_VENDOR_OPTIONS)
    if arch == BIOS_ARCH:
        return BootAnswer(BootKind.BIOS, arch, settings.bios_file, PXE_CLIENT, PXE_VENDOR_OPTIONS)
    if arch in UEFI_ARCHES:
        return BootAnswer(BootKind.UEFI, arch, settings.uefi_boot_file, PXE_CLIENT, None)
    if arch == HTTP_ARCH:
        return BootAnswer(BootKind.UEFI_HTTP, arch, settings.http_boot_file, HTTP_CLIENT, None)
    return Skip.UNKNOWN_ARCH  # an iPXE ROM of an architecture we have no boot file for


def _cstring(text: str) -> bytes:
    # NUL-terminated like dnsmasq does for 66/67: "Some PXE ROMs have bugs and need zero-terminated names".
    return text.encode("ascii") + b"\0"


def boot_fields(answer: BootAnswer, request: DhcpPacket, settings: PxeSettings) -> BootFields:
    """The boot file goes in the `file` field (what PXE ROMs read) and, when the client asks for them in
    option 55 or the name does not fit the field, in options 66/67 too."""
    server = str(settings.server_ip)
    fits = len(answer.boot_file) <= 127
    options: dict[int, bytes] = {Opt.VENDOR_CLASS: answer.vendor_class}
    guid = request.client_machine_id
    if guid is not None:
        options[Opt.CLIENT_MACHINE_ID] = guid
    if answer.pxe_options is not None:
        options[Opt.VENDOR_SPECIFIC] = answer.pxe_options
    wanted = request.parameter_request_list
    if Opt.TFTP_SERVER_NAME in wanted:
        options[Opt.TFTP_SERVER_NAME] = _cstring(server)
    if Opt.BOOTFILE_NAME in wanted or not fits:
        options[Opt.BOOTFILE_NAME] = _cstring(answer.boot_file)
    return BootFields(settings.server_ip, server, answer.boot_file if fits else "", options)


# --------------------------------------------------------------------------------- config snippets
def dhcp_config_snippet(kind: SnippetKind, settings: PxeSettings) -> str:
    """The same boot policy for a site that keeps its own DHCP server (dnsmasq, ISC dhcpd or Kea)."""
    if kind == "dnsmasq":
        return _dnsmasq(settings)
    if kind == "isc":
        return _isc(settings)
    if kind == "kea":
        return _kea(settings)
    raise DhcpSettingsError("kind", f"{kind!r} is not dnsmasq, isc or kea")


def _header(settings: PxeSettings, kind: str, comment: str) -> list[str]:
    return [
        f"{comment} provision: network boot from {settings.server_ip} (provision dhcp-config --for {kind})",
        f"{comment} iPXE (user class 'iPXE') gets its boot script over HTTP; other PXE clients get a file by",
        f"{comment} option 93: 0 BIOS -> {settings.bios_file}, 6/7/9 UEFI -> {settings.uefi_boot_file},"
        " 16 UEFI HTTP -> URL.",
    ]


def _dnsmasq(s: PxeSettings) -> str:
    ip = s.server_ip
    lines = [
        *_header(s, "dnsmasq", "#"),
        "# Add to the dnsmasq configuration of the imaging LAN; dnsmasq keeps leasing the addresses.",
        "dhcp-userclass=set:provision-ipxe,iPXE",
        "dhcp-match=set:provision-ipxe,175",
        "dhcp-match=set:provision-bios,option:client-arch,0",
        *(f"dhcp-match=set:provision-uefi,option:client-arch,{arch}" for arch in sorted(UEFI_ARCHES)),
        f"dhcp-match=set:provision-uefi-http,option:client-arch,{HTTP_ARCH}",
        f"dhcp-boot=tag:provision-ipxe,{s.ipxe_script}",
        f"dhcp-boot=tag:!provision-ipxe,tag:provision-bios,{s.bios_file},{ip},{ip}",
        f"dhcp-boot=tag:!provision-ipxe,tag:provision-uefi,{s.uefi_boot_file},{ip},{ip}",
        "dhcp-option-force=tag:!provision-ipxe,tag:provision-uefi-http,60,HTTPClient",
        f"dhcp-boot=tag:!provision-ipxe,tag:provision-uefi-http,{s.http_boot_file}",
    ]
    return "\n".join(lines) + "\n"


def _isc(s: PxeSettings) -> str:
    uefi = " or ".join(f"option arch = 00:{arch:02x}" for arch in sorted(UEFI_ARCHES))
    lines = [
        *_header(s, "isc", "#"),
        "# ISC dhcpd: the option line belongs at the top level of dhcpd.conf (once), the rest inside",
        "# the subnet { } of the imaging LAN.",
        "option arch code 93 = unsigned integer 16;",
        "",
        f"next-server {s.server_ip};",
        'if exists user-class and option user-class = "iPXE" {',
        f'  filename "{s.ipxe_script}";',
        f"}} elsif option arch = 00:{HTTP_ARCH:02x} {{",
        '  option vendor-class-identifier "HTTPClient";',
        f'  filename "{s.http_boot_file}";',
        f"}} elsif {uefi} {{",
        f'  filename "{s.uefi_boot_file}";',
        f"}} elsif option arch = 00:{BIOS_ARCH:02x} {{",
        f'  filename "{s.bios_file}";',
        "}",
    ]
    return "\n".join(lines) + "\n"


def _kea(s: PxeSettings) -> str:
    not_ipxe = "not member('provision-ipxe')"
    first_arch = "substring(option[93].hex,0,2)"
    uefi = " or ".join(f"{first_arch} == 0x{arch:04x}" for arch in sorted(UEFI_ARCHES))
    classes: list[dict[str, object]] = [
        {
            "name": "provision-ipxe",
            "test": "substring(option[77].hex,0,4) == 'iPXE'",
            "boot-file-name": s.ipxe_script,
        },
        {
            "name": "provision-uefi-http",
            "test": f"{not_ipxe} and {first_arch} == 0x{HTTP_ARCH:04x}",
            "option-data": [{"name": "vendor-class-identifier", "data": "HTTPClient"}],
            "boot-file-name": s.http_boot_file,
        },
        {
            "name": "provision-uefi",
            "test": f"{not_ipxe} and ({uefi})",
            "next-server": str(s.server_ip),
            "boot-file-name": s.uefi_boot_file,
        },
        {
            "name": "provision-bios",
            "test": f"{not_ipxe} and {first_arch} == 0x{BIOS_ARCH:04x}",
            "next-server": str(s.server_ip),
            "boot-file-name": s.bios_file,
        },
    ]
    lines = [
        *_header(s, "kea", "//"),
        '// Kea DHCPv4: merge "client-classes" into the "Dhcp4" object of kea-dhcp4.conf.',
        json.dumps({"client-classes": classes}, indent=2),
    ]
    return "\n".join(lines) + "\n"
