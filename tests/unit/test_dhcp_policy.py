"""PXE policy: the boot file by architecture and user class, the boot_allowed() hook, and config snippets."""

from __future__ import annotations

import json
import shutil
import subprocess
from ipaddress import IPv4Address

import pytest

from provision.dhcp.packet import DhcpPacket, MessageType, Opt, client_request
from provision.dhcp.policy import (
    PXE_VENDOR_OPTIONS,
    BootAnswer,
    BootKind,
    DhcpSettingsError,
    PxeSettings,
    Skip,
    boot_answer,
    boot_fields,
    client_arch,
    dhcp_config_snippet,
)

MAC = "52:54:00:12:34:56"
SERVER = IPv4Address("198.18.0.1")
SETTINGS = PxeSettings(server_ip=SERVER, http_port=8080)
SCRIPT = "http://198.18.0.1:8080/boot/${mac}.ipxe"


def pxe(arch: int | None, *, vendor: bytes | None = None, user_class: bytes | None = None, **more: bytes) -> DhcpPacket:
    options: dict[int, bytes] = {}
    if arch is not None:
        options[Opt.CLIENT_ARCH] = arch.to_bytes(2, "big")
    if vendor is None:
        kind = b"HTTPClient" if arch == 16 else b"PXEClient"
        vendor = kind + b":Arch:%05d:UNDI:003001" % (arch or 0)
    options[Opt.VENDOR_CLASS] = vendor
    if user_class is not None:
        options[Opt.USER_CLASS] = user_class
    options.update({int(k.removeprefix("o")): v for k, v in more.items()})
    return client_request(MessageType.DISCOVER, MAC, options=options)


def answer(packet: DhcpPacket, settings: PxeSettings = SETTINGS) -> BootAnswer:
    result = boot_answer(packet, settings)
    assert isinstance(result, BootAnswer), result
    return result


@pytest.mark.parametrize(
    ("arch", "kind", "file", "vendor", "option43"),
    [
        (0, BootKind.BIOS, "undionly.kpxe", b"PXEClient", PXE_VENDOR_OPTIONS),
        (6, BootKind.UEFI, "shimx64.efi", b"PXEClient", None),
        (7, BootKind.UEFI, "shimx64.efi", b"PXEClient", None),
        (9, BootKind.UEFI, "shimx64.efi", b"PXEClient", None),
        (16, BootKind.UEFI_HTTP, "http://198.18.0.1:8080/files/shimx64.efi", b"HTTPClient", None),
    ],
)
def test_table(arch, kind, file, vendor, option43):
    a = answer(pxe(arch))
    assert (a.kind, a.arch, a.boot_file, a.vendor_class, a.pxe_options) == (kind, arch, file, vendor, option43)


@pytest.mark.parametrize("arch", [0, 7, 9, 16, 11])
@pytest.mark.parametrize("user_class", [b"iPXE", b"\x04iPXE"])
def test_ipxe_gets_its_script_url_whatever_the_arch(arch, user_class):
    a = answer(pxe(arch, user_class=user_class))
    assert a.kind is BootKind.IPXE
    assert a.boot_file == SCRIPT  # the literal ${mac}: iPXE expands it
    assert a.vendor_class == b"PXEClient" and a.pxe_options == PXE_VENDOR_OPTIONS


def test_uefi_loader_ipxe_uses_snponly():
    settings = PxeSettings(server_ip=SERVER, http_port=8080, uefi_loader="ipxe")
    assert answer(pxe(7), settings).boot_file == "snponly.efi"
    assert answer(pxe(16), settings).boot_file == "http://198.18.0.1:8080/files/snponly.efi"
    assert answer(pxe(0), settings).boot_file == "undionly.kpxe"


@pytest.mark.parametrize(
    "packet",
    [
        client_request(MessageType.DISCOVER, MAC),
        client_request(MessageType.DISCOVER, MAC, options={60: b"udhcp 1.36.1"}),
        client_request(MessageType.DISCOVER, MAC, options={60: b"MSFT 5.0", 93: b"\x00\x00"}),
        client_request(MessageType.DISCOVER, MAC, options={60: b"pxeclient", 93: b"\x00\x00"}),
    ],
)
def test_non_pxe_clients_are_skipped(packet):
    assert boot_answer(packet, SETTINGS) is Skip.NOT_PXE


@pytest.mark.parametrize("arch", [1, 2, 10, 11, 15, 19, 0xFFFF])
def test_unknown_arch_is_skipped(arch):
    assert boot_answer(pxe(arch), SETTINGS) is Skip.UNKNOWN_ARCH


def test_boot_allowed_hook_gets_the_mac_and_can_refuse():
    asked: list[str] = []

    def boot_allowed(mac: str) -> bool:
        asked.append(mac)
        return False

    settings = PxeSettings(server_ip=SERVER, http_port=8080, boot_allowed=boot_allowed)
    assert boot_answer(pxe(0), settings) is Skip.DECLINED
    assert boot_answer(pxe(0, user_class=b"iPXE"), settings) is Skip.DECLINED
    assert boot_answer(pxe(11), settings) is Skip.UNKNOWN_ARCH  # not asked: nothing to offer anyway
    assert boot_answer(client_request(MessageType.DISCOVER, MAC), settings) is Skip.NOT_PXE
    assert asked == [MAC, MAC]


def test_arch_from_vendor_class_when_option_93_is_missing():
    assert client_arch(pxe(None, vendor=b"PXEClient:Arch:00007:UNDI:003000")) == 7
    assert answer(pxe(None, vendor=b"PXEClient:Arch:00000:UNDI:002001")).boot_file == "undionly.kpxe"
    assert boot_answer(pxe(None, vendor=b"PXEClient"), SETTINGS) is Skip.UNKNOWN_ARCH
    assert boot_answer(pxe(None, vendor=b"PXEClient:Arch:7"), SETTINGS) is Skip.UNKNOWN_ARCH


def test_first_of_several_arches_wins():
    packet = client_request(MessageType.DISCOVER, MAC, options={93: b"\x00\x10\x00\x07", 60: b"HTTPClient"})
    assert answer(packet).kind is BootKind.UEFI_HTTP


# ---------------------------------------------------------------------------------- boot fields
def test_boot_fields_options_only_when_asked():
    guid = b"\x00" + bytes(range(16))
    plain = boot_fields(answer(pxe(0, o97=guid)), pxe(0, o97=guid), SETTINGS)
    assert (plain.siaddr, plain.sname, plain.file) == (SERVER, "198.18.0.1", "undionly.kpxe")
    assert plain.options == {60: b"PXEClient", 97: guid, 43: PXE_VENDOR_OPTIONS}
    asking = pxe(0, o55=bytes([1, 3, 43, 60, 66, 67]))
    fields = boot_fields(answer(asking), asking, SETTINGS)
    assert fields.options[66] == b"198.18.0.1\0" and fields.options[67] == b"undionly.kpxe\0"
    assert 97 not in fields.options


def test_url_too_long_for_the_file_field_goes_in_option_67():
    long = "http://{server}:{port}/" + "x" * 150 + "/${{mac}}.ipxe"
    settings = PxeSettings(server_ip=SERVER, http_port=8080, ipxe_script_url=long)
    packet = pxe(0, user_class=b"iPXE")
    fields = boot_fields(answer(packet, settings), packet, settings)
    assert fields.file == ""
    assert fields.options[67].rstrip(b"\0").decode() == settings.ipxe_script
    assert len(fields.options[67]) > 128


# ------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"server_ip": IPv4Address("0.0.0.0")}, "server_ip"),
        ({"http_port": 0}, "http_port"),
        ({"http_port": 70000}, "http_port"),
        ({"uefi_loader": "grub"}, "uefi_loader"),
        ({"bios_file": ""}, "bios_file"),
        ({"uefi_file": "a file.efi"}, "uefi_file"),
        ({"ipxe_uefi_file": "x" * 128}, "ipxe_uefi_file"),
        ({"ipxe_script_url": "http://{server}:{port}/boot/${mac}.ipxe"}, "ipxe_script_url"),  # unescaped
        ({"ipxe_script_url": "http://{host}/boot"}, "ipxe_script_url"),
        ({"http_boot_url": "tftp://{server}/{file}"}, "http_boot_url"),
        ({"http_boot_url": "http://{server}/" + "x" * 300}, "http_boot_url"),
        ({"http_boot_url": "http://{server}/b\u00fcro/{file}"}, "http_boot_url"),
        ({"ipxe_script_url": "http://{server}/a b/${{mac}}"}, "ipxe_script_url"),
    ],
)
def test_bad_settings(kwargs, key):
    values = {"server_ip": SERVER, "http_port": 8080, **kwargs}
    with pytest.raises(DhcpSettingsError) as info:
        PxeSettings(**values)
    assert info.value.key == key and isinstance(info.value, ValueError)


def test_settings_urls():
    assert SETTINGS.ipxe_script == SCRIPT
    assert SETTINGS.http_boot_file == "http://198.18.0.1:8080/files/shimx64.efi"
    assert SETTINGS.uefi_boot_file == "shimx64.efi"


# ------------------------------------------------------------------------------------- snippets
@pytest.mark.parametrize("loader", ["shim", "ipxe"])
def test_snippets_name_the_files(loader):
    settings = PxeSettings(server_ip=SERVER, http_port=8080, uefi_loader=loader)
    uefi = "shimx64.efi" if loader == "shim" else "snponly.efi"
    for kind in ("dnsmasq", "isc", "kea"):
        text = dhcp_config_snippet(kind, settings)
        assert "undionly.kpxe" in text, kind
        assert uefi in text, kind
        assert ("snponly.efi" in text) == (loader == "ipxe"), kind
        assert SCRIPT in text, kind
        assert f"http://198.18.0.1:8080/files/{uefi}" in text, kind
        assert "HTTPClient" in text, kind
        assert "198.18.0.1" in text, kind


def test_dnsmasq_snippet():
    text = dhcp_config_snippet("dnsmasq", SETTINGS)
    lines = text.splitlines()
    assert "dhcp-match=set:provision-bios,option:client-arch,0" in lines
    assert "dhcp-match=set:provision-uefi,option:client-arch,7" in lines
    assert "dhcp-userclass=set:provision-ipxe,iPXE" in lines
    assert f"dhcp-boot=tag:provision-ipxe,{SCRIPT}" in lines
    assert "dhcp-boot=tag:!provision-ipxe,tag:provision-bios,undionly.kpxe,198.18.0.1,198.18.0.1" in lines
    assert "dhcp-boot=tag:!provision-ipxe,tag:provision-uefi,shimx64.efi,198.18.0.1,198.18.0.1" in lines


@pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="dnsmasq is not installed")
def test_dnsmasq_accepts_its_snippet(tmp_path):
    conf = tmp_path / "provision.conf"
    conf.write_text(dhcp_config_snippet("dnsmasq", SETTINGS))
    result = subprocess.run(
        ["dnsmasq", "--test", f"--conf-file={conf}"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "syntax check OK" in result.stderr


def test_isc_snippet():
    text = dhcp_config_snippet("isc", SETTINGS)
    assert "option arch code 93 = unsigned integer 16;" in text
    assert 'if exists user-class and option user-class = "iPXE" {' in text
    assert f'filename "{SCRIPT}";' in text
    assert "elsif option arch = 00:06 or option arch = 00:07 or option arch = 00:09 {" in text
    assert 'filename "undionly.kpxe";' in text and "next-server 198.18.0.1;" in text
    assert text.count("{") == text.count("}")


def test_kea_snippet_is_json_with_exclusive_classes():
    text = dhcp_config_snippet("kea", SETTINGS)
    body = "\n".join(line for line in text.splitlines() if not line.startswith("//"))
    classes = json.loads(body)["client-classes"]
    by_name = {c["name"]: c for c in classes}
    assert list(by_name) == ["provision-ipxe", "provision-uefi-http", "provision-uefi", "provision-bios"]
    assert by_name["provision-ipxe"]["boot-file-name"] == SCRIPT
    assert by_name["provision-bios"]["boot-file-name"] == "undionly.kpxe"
    assert by_name["provision-uefi"]["next-server"] == "198.18.0.1"
    assert "0x0007" in by_name["provision-uefi"]["test"]
    assert by_name["provision-uefi-http"]["option-data"] == [{"name": "vendor-class-identifier", "data": "HTTPClient"}]
    for name in ("provision-uefi-http", "provision-uefi", "provision-bios"):
        assert by_name[name]["test"].startswith("not member('provision-ipxe')")


def test_unknown_snippet_kind():
    with pytest.raises(DhcpSettingsError):
        dhcp_config_snippet("windows", SETTINGS)  # type: ignore[arg-type]


def test_chain_ipxe_hook_hands_the_rom_the_arch_file() -> None:
    from ipaddress import IPv4Address

    from provision.dhcp import DhcpPacket, MessageType, Opt, PxeSettings, boot_answer

    packet = DhcpPacket(
        op=1,
        xid=7,
        chaddr=bytes.fromhex("525400123456") + bytes(10),
        options={
            Opt.MESSAGE_TYPE: bytes([MessageType.DISCOVER]),
            Opt.VENDOR_CLASS: b"PXEClient:Arch:00000:UNDI:002001",
            Opt.CLIENT_ARCH: b"\x00\x00",
            Opt.USER_CLASS: b"iPXE",
        },
    )
    seen: list[tuple[str, int, bool]] = []

    def chain(mac: str, xid: int, ipxe: bool) -> bool:
        seen.append((mac, xid, ipxe))
        return True

    chained = boot_answer(packet, PxeSettings(IPv4Address("198.18.0.1"), 8080, chain_ipxe=chain))
    assert not isinstance(chained, str) and chained.boot_file == "undionly.kpxe"
    assert seen == [("52:54:00:12:34:56", 7, True)]
    plain = boot_answer(packet, PxeSettings(IPv4Address("198.18.0.1"), 8080))
    assert not isinstance(plain, str) and plain.boot_file.endswith("/boot/${mac}.ipxe")
