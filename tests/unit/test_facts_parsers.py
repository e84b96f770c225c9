"""Unit tests of the probe parsers on small inline samples (our captures are used in test_facts_probe.py)."""

from __future__ import annotations

import json
import logging
import random

import pytest

from provision.facts import (
    CpuInfo,
    DmiFacts,
    MemInfo,
    parse_cpuinfo,
    parse_dmidecode,
    parse_lsblk,
    parse_lspci,
    parse_meminfo,
    parse_smartctl_json,
    parse_smartctl_text,
)
from provision.facts.lspci import parse_lspci_line

HOSTILE = "$(rm -rf /); `x`"
LONG = "A" * 10_240

_DMI_TEMPLATE = """\
# dmidecode 3.3
Getting SMBIOS data from sysfs.
SMBIOS 2.7 present.

Handle 0x0000, DMI type 0, 24 bytes
BIOS Information
\tVendor: Dell Inc.
\tVersion: A29
\tRelease Date: 06/28/2018
\tCharacteristics:
\t\tPCI is supported
\t\tACPI is supported
\t\tUEFI is supported
\tBIOS Revision: 4.6

Handle 0x0100, DMI type 1, 27 bytes
System Information
\tManufacturer: Dell Inc.
\tProduct Name: OptiPlex 7010      \n\tVersion: 01
\tSerial Number: --
\tUUID: --
\tSKU Number: To Be Filled By O.E.M.
\tFamily: Not Specified

Handle 0x0200, DMI type 2, 9 bytes
Base Board Information
\tManufacturer: Dell Inc.
\tProduct Name: 0GY6Y8
\tVersion: A02

Handle 0x0300, DMI type 3, 22 bytes
Chassis Information
\tManufacturer: Dell Inc.
\tType: Space-saving
\t1C0F3A2B4D

Handle 0x0301, DMI type 3, 22 bytes
Chassis Information
\tType: Tower

Handle 0x0400, DMI type 4, 42 bytes
Processor Information
\tSocket Designation: CPU 1
\tType: Central Processor
\tFamily: Core i5
\tFlags:
\t\tFPU (Floating-point unit on-chip)
\tVersion: Intel(R) Core(TM) i5-3470 CPU @ 3.20GHz
\tStatus: Populated, Enabled
\tCore Count: 4
\tThread Count: 4

Handle 0x0401, DMI type 4, 42 bytes
Processor Information
\tSocket Designation: CPU 2
\tType: Central Processor
\tFamily: Unknown
\tVersion: Not Specified
\tStatus: Unpopulated
\tCore Count: 0

{memory}
Handle 0x7F00, DMI type 127, 4 bytes
End Of Table
"""


# Type 17 (Memory Device): Size, Form Factor, Locator, Type.
_MEMORY = [
    ("4096 MB", "DIMM", "DIMM1", "DDR3"),
    ("No Module Installed", "DIMM", "DIMM2", "Unknown"),
    ("8 GB", "Chip", "ChannelB-DIMM0", "DDR3"),  # a real module reported as "Chip" (ThinkPad T440)
    ("4 MB", "Chip", "SYSTEM ROM", "Flash"),  # not RAM (HP Compaq 8000)
    ("Unknown", "DIMM", "DIMM4", "Unknown"),
    ("Not Installed", "DIMM", "DIMM5", "Unknown"),
]
DMI = _DMI_TEMPLATE.format(
    memory="".join(
        f"Handle 0x11{n:02X}, DMI type 17, 34 bytes\nMemory Device\n\tSize: {size}\n\tForm Factor: {form}\n"
        f"\tLocator: {locator}\n\tType: {kind}\n\n"
        for n, (size, form, locator, kind) in enumerate(_MEMORY)
    )
)


def _dmi_with(product: str) -> str:
    return DMI.replace("OptiPlex 7010      ", product)


# --- dmidecode ------------------------------------------------------------------------------------------


def test_dmidecode_reads_the_known_structures() -> None:
    dmi = parse_dmidecode(DMI)
    assert dmi.smbios_version == "2.7"
    assert (dmi.bios.vendor, dmi.bios.version, dmi.bios.date) == ("Dell Inc.", "A29", "06/28/2018")
    assert dmi.bios.uefi_supported is True
    assert dmi.system.vendor == "Dell Inc."
    assert dmi.system.product == "OptiPlex 7010"  # trailing blanks stripped
    assert dmi.system.version == "01"
    assert (dmi.board.vendor, dmi.board.product, dmi.board.version) == ("Dell Inc.", "0GY6Y8", "A02")
    assert dmi.chassis_type == "Space-saving"  # the first chassis
    assert (dmi.cpu_version, dmi.cpu_family) == ("Intel(R) Core(TM) i5-3470 CPU @ 3.20GHz", "Core i5")
    # "--" (masked by the publisher), "To Be Filled By O.E.M.", "Not Specified" are unknown
    assert (dmi.system.serial, dmi.system.uuid, dmi.system.sku, dmi.system.family) == (None, None, None, None)


# fmt: off
PLACEHOLDERS = [
    "Not Specified", "Not Available", "To Be Filled By O.E.M.", "to be filled by o.e.m.", "Default string",
    "None", "NONE", "System Product Name", "--", "0123456789", "Not Present", "Unknown", "", "   ",
]
# fmt: on


@pytest.mark.parametrize("placeholder", PLACEHOLDERS)
def test_dmidecode_placeholder_product_is_none(placeholder: str) -> None:
    assert parse_dmidecode(_dmi_with(placeholder)).system.product is None


@pytest.mark.parametrize("value", [HOSTILE, LONG, "Robert'); DROP TABLE machines;--", "a\\nb | c > /dev/sda"])
def test_dmidecode_hostile_strings_are_carried_unchanged(value: str) -> None:
    assert parse_dmidecode(_dmi_with(value)).system.product == value


def test_dmidecode_cpu_counts_skip_unpopulated_sockets() -> None:
    dmi = parse_dmidecode(DMI)
    assert (dmi.cpu_cores, dmi.cpu_threads) == (4, 4)
    two_sockets = DMI.replace("Status: Unpopulated", "Status: Populated, Enabled").replace(
        "Core Count: 0", "Core Count: 4\n\tThread Count: 8"
    )
    dmi = parse_dmidecode(two_sockets)
    assert (dmi.cpu_cores, dmi.cpu_threads) == (8, 12)
    assert dmi.cpu_version == "Intel(R) Core(TM) i5-3470 CPU @ 3.20GHz"  # first populated socket


def test_dmidecode_memory_only_installed_ram() -> None:
    memory = parse_dmidecode(DMI).memory
    assert [(m.locator, m.size_mb, m.form_factor, m.type) for m in memory] == [
        ("DIMM1", 4096, "DIMM", "DDR3"),
        ("ChannelB-DIMM0", 8192, "Chip", "DDR3"),
    ]  # "No Module Installed", "Unknown", "Not Installed" and the 4 MB flash chip are not RAM
    assert parse_dmidecode(DMI).ram_installed_mb == 12288


def test_dmidecode_uefi_flag_tristate() -> None:
    assert parse_dmidecode(DMI.replace("\t\tUEFI is supported\n", "")).bios.uefi_supported is False
    no_list = DMI.replace("\tCharacteristics:\n\t\tPCI is supported\n\t\tACPI is supported\n", "").replace(
        "\t\tUEFI is supported\n", ""
    )
    assert parse_dmidecode(no_list).bios.uefi_supported is None
    without_type0 = DMI.replace("DMI type 0,", "DMI type 200,")
    assert parse_dmidecode(without_type0).bios == parse_dmidecode("").bios
    assert parse_dmidecode(without_type0).bios.uefi_supported is None


def test_dmidecode_smbios_three_part_version_and_crlf() -> None:
    text = DMI.replace("SMBIOS 2.7 present.", "SMBIOS 3.0.0 present.").replace("\n", "\r\n")
    dmi = parse_dmidecode(text)
    assert dmi.smbios_version == "3.0.0"
    assert dmi.system.product == "OptiPlex 7010"


@pytest.mark.parametrize(
    "text", ["", "garbage", "\x00\xff\ufffd" * 100, "Handle 0x0000, DMI type 0, 24 bytes", "\t\t\t:::\n" * 50]
)
def test_dmidecode_garbage_gives_empty_facts(text: str) -> None:
    assert parse_dmidecode(text) == DmiFacts()


def test_dmidecode_every_truncation_parses() -> None:
    for end in range(0, len(DMI), 7):
        parse_dmidecode(DMI[:end])


# --- lspci ----------------------------------------------------------------------------------------------

NIC_LINE = (
    "00:19.0 Ethernet controller [0200]: Intel Corporation 82567LM-3 Gigabit Network Connection [8086:10de] (rev 02)"
)
SATA_LINE = (
    "0000:00:1f.2 SATA controller [0106]: Intel Corporation 82801JD/DO SATA AHCI Controller [8086:3a02]"
    " (rev 02) (prog-if 01 [AHCI 1.0])"
)
VGA_LINE = (
    "01:00.0 VGA compatible controller [0300]: Advanced Micro Devices, Inc. [AMD/ATI] RV710 [Radeon HD 4550]"
    " [1002:9540] (prog-if 00 [VGA controller])"
)
LSPCI_VV = f"""\
{NIC_LINE}
\tSubsystem: Dell OptiPlex 780 [1028:0276]
\tControl: I/O+ Mem+ BusMaster+ SpecCycle- MemWINV- VGASnoop- ParErr- Stepping- SERR- FastB2B- DisINTx+
\tCapabilities: <access denied>
\tKernel driver in use: e1000e
\tKernel modules: e1000e

{SATA_LINE}
\tSubsystem: Dell Device [1028:0420]
\tCapabilities: [80] MSI: Enable+ Count=1/16 Maskable- 64bit-
\t\tAddress: fee0300c  Data: 4181
\tKernel driver in use: ahci
\tKernel modules: ahci, libahci ,

{VGA_LINE}
\tSubsystem: PC Partner Limited / Sapphire Technology Device [174b:3008]
"""


def test_lspci_verbose_blocks() -> None:
    nic, sata, vga = parse_lspci(LSPCI_VV)
    assert nic.slot == "00:19.0"
    assert (nic.class_code, nic.class_name, nic.pci_id) == ("0200", "Ethernet controller", "8086:10de")
    assert nic.description == "Intel Corporation 82567LM-3 Gigabit Network Connection"
    assert (nic.subsystem, nic.driver, nic.modules) == ("1028:0276", "e1000e", ("e1000e",))
    assert sata.slot == "0000:00:1f.2"
    assert (sata.pci_id, sata.driver, sata.modules) == ("8086:3a02", "ahci", ("ahci", "libahci"))
    assert vga.pci_id == "1002:9540"  # the last bracket, not [AMD/ATI] or [Radeon HD 4550]
    assert vga.description == "Advanced Micro Devices, Inc. [AMD/ATI] RV710 [Radeon HD 4550]"
    assert (vga.subsystem, vga.driver) == ("174b:3008", None)


@pytest.mark.parametrize(
    ("line", "pci_id", "class_code"),
    [
        ("00:02.0 Host bridge [0600]: Intel Corporation Device [8086:0d57]", "8086:0d57", "0600"),
        ("00:1f.2 IDE interface [0101]: ICH10 [8086:3a00] (rev 02) (prog-if 8a [ISA])", "8086:3a00", "0101"),
        ("00:1f.2 IDE interface [0101]: ICH10 [8086:3a00] (prog-if 8a [ISA]) (rev 02)", "8086:3a00", "0101"),
        ("03:00.0 Network controller [0280]: Intel Wireless 7260 [8086:08B2] (rev 6b)", "8086:08b2", "0280"),
        ("00:19.0 Ethernet controller: Intel Corporation 82567LM-3 (rev 02)", None, None),  # plain lspci
    ],
)
def test_lspci_line_variants(line: str, pci_id: str | None, class_code: str | None) -> None:
    device = parse_lspci_line(line)
    assert device is not None
    assert (device.pci_id, device.class_code) == (pci_id, class_code)
    assert device.description is not None and "rev" not in device.description


def test_lspci_unparsable_lines_are_skipped() -> None:
    text = "garbage line\n\tKernel driver in use: evil\nzz:zz.z nope\n" + LSPCI_VV + "\x00\xff\n"
    devices = parse_lspci(text)
    assert [d.slot for d in devices] == ["00:19.0", "0000:00:1f.2", "01:00.0"]
    assert all(d.driver != "evil" for d in devices)


def test_lspci_hostile_description_carried_unchanged() -> None:
    (device,) = parse_lspci(f"00:19.0 Ethernet controller [0200]: {HOSTILE} {LONG} [8086:10de] (rev 02)\n")
    assert device.description == f"{HOSTILE} {LONG}"
    assert device.pci_id == "8086:10de"


@pytest.mark.parametrize("text", ["", "garbage", "\n\n\t\t", " " * 10_000 + "[", "00:19.0 " + " " * 20_000])
def test_lspci_garbage_gives_no_device(text: str) -> None:
    assert parse_lspci(text) == ()


# --- lsblk ----------------------------------------------------------------------------------------------


# Older lsblk (< 2.33) printed every value as a string and had a single "mountpoint".
LSBLK_OLD = """{"blockdevices": [
  {"name": "sda", "size": "250059350016", "rota": "1", "rm": "0", "tran": "sata", "type": "disk",
   "model": "ST250DM000-1BD14 ", "log-sec": "512", "phy-sec": "4096", "mountpoint": null,
   "children": [{"name": "sda1", "type": "part", "mountpoint": "/mnt"},
                {"name": "sda2", "type": "part", "mountpoint": "[SWAP]"}]},
  {"name": "sdb", "type": "disk", "rm": "1", "tran": "usb", "size": "oops"}
]}"""


def test_lsblk_old_format_with_strings() -> None:
    sda, sdb = parse_lsblk(LSBLK_OLD)
    assert (sda.size_bytes, sda.rotational, sda.removable) == (250059350016, True, False)
    assert (sda.model, sda.logical_sector, sda.physical_sector) == ("ST250DM000-1BD14", 512, 4096)
    assert sda.mounted == ("/mnt", "[SWAP]")
    assert (sdb.removable, sdb.size_bytes, sdb.rotational) == (True, None, None)


def test_lsblk_hostile_and_wrong_types() -> None:
    data = {
        "blockdevices": [
            {"name": "sda", "type": "disk", "model": f"  {HOSTILE}\n{LONG}  ", "serial": 42, "size": -1},
            {"name": "zram0", "type": "disk"},
            {"type": "disk"},
            "not a dict",
            {"name": "sr0", "type": "rom"},
        ]
    }
    (sda,) = parse_lsblk(json.dumps(data))
    assert sda.model == f"{HOSTILE}\n{LONG}"
    assert (sda.serial, sda.size_bytes, sda.removable, sda.transport) == (None, None, None, None)


@pytest.mark.parametrize("text", ["", "{", "[]", '{"blockdevices": 3}', "\x00\xff", "[" * 100_000])
def test_lsblk_invalid_gives_no_disk_and_a_warning(text: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="provision.facts.lsblk"):
        assert parse_lsblk(text) == ()
    assert "lsblk output ignored" in caplog.text


# --- /proc ----------------------------------------------------------------------------------------------


def _cpuinfo(sockets: int, cores: int, threads_per_core: int, topology: bool = True) -> str:
    blocks = []
    n = 0
    for socket in range(sockets):
        for _ in range(cores * threads_per_core):
            lines = [f"processor\t: {n}", "model name\t: Intel(R) Xeon(R) CPU E5-2620 0 @ 2.00GHz"]
            if topology:
                lines += [f"physical id\t: {socket}", f"cpu cores\t: {cores}"]
            lines.append("flags\t\t: fpu vme sse2 ht lm" if n == 0 else "flags\t\t: other")
            blocks.append("\n".join(lines))
            n += 1
    return "\n\n".join(blocks) + "\n"


def test_cpuinfo_counts_sockets_cores_threads() -> None:
    cpu = parse_cpuinfo(_cpuinfo(sockets=2, cores=6, threads_per_core=2))
    assert cpu == CpuInfo(
        model="Intel(R) Xeon(R) CPU E5-2620 0 @ 2.00GHz",
        sockets=2,
        cores=12,
        threads=24,
        flags=("fpu", "vme", "sse2", "ht", "lm"),
    )


def test_cpuinfo_without_topology_counts_threads_as_cores() -> None:
    cpu = parse_cpuinfo(_cpuinfo(sockets=1, cores=4, threads_per_core=1, topology=False))
    assert (cpu.sockets, cpu.cores, cpu.threads) == (1, 4, 4)


def test_meminfo() -> None:
    assert parse_meminfo("MemTotal:        8056380 kB\nMemFree:  1 kB\n") == MemInfo(total_kb=8056380)
    assert parse_meminfo("MemFree: 1 kB\nMemTotal: lots\n") == MemInfo()


@pytest.mark.parametrize("text", ["", "garbage", "processor : x\n", "\x00\xff" * 100])
def test_procfs_garbage(text: str) -> None:
    assert parse_meminfo(text) == MemInfo()
    cpu = parse_cpuinfo(text)
    assert cpu.model is None and cpu.flags == ()


# --- no parser raises, whatever the text ----------------------------------------------------------------

_ALPHABET = '\t\n\r :[]()-.,0123456789abcdefxyzABC#%"{}\\\x00\x85\u2028\ufffd\u00e9\U0001f600'


def _fuzz_texts(count: int) -> list[str]:
    """Deterministic noise: random characters, and samples cut and spliced at random places."""
    rng = random.Random(20240611)
    samples = [DMI, LSPCI_VV, LSBLK_OLD, _cpuinfo(1, 2, 2)]
    texts = []
    for _ in range(count):
        noise = "".join(rng.choice(_ALPHABET) for _ in range(rng.randrange(400)))
        sample = rng.choice(samples)
        cut = rng.randrange(len(sample) + 1)
        texts += [noise, sample[:cut] + noise + sample[rng.randrange(cut + 1) :]]
    return texts


def test_parsers_never_raise() -> None:
    for text in _fuzz_texts(300):
        parse_dmidecode(text)
        parse_lspci(text)
        parse_lsblk(text)
        parse_meminfo(text)
        parse_cpuinfo(text)
        parse_smartctl_json(text)
        parse_smartctl_text(text)
