"""Issue 12, defect 9: a dmidecode.txt with a newline inside a value added a field line that won over the real one.

Real dmidecode never prints a newline inside a value (it replaces control characters in SMBIOS strings with
dots), so lines that look like its own but come from a value are injected. The rules (provision/facts/
dmidecode.py): a key stated twice differently in one structure is unknown; a second BIOS or system structure
makes that structure unknown; more structures than the header declares make the whole table unknown. The
31 real dumps of ../shared/hardware and tests/samples parse exactly as before (checked below and by
test_facts_hardware.py).
"""

from __future__ import annotations

import re

import pytest

from provision.facts import DmiFacts, parse_dmidecode
from provision.facts.dmidecode import _split_blocks
from tests.support.bounded import bounded
from tests.support.paths import HARDWARE

HEADER = "# dmidecode 3.3\nGetting SMBIOS data from sysfs.\nSMBIOS 2.7 present.\n{count}\n"
BIOS = "Handle 0x0000, DMI type 0, 24 bytes\nBIOS Information\n\tVendor: {vendor}\n\tVersion: A29\n"
BIOS += "\tCharacteristics:\n\t\tPCI is supported\n\n"
SYSTEM = "Handle 0x0100, DMI type 1, 27 bytes\nSystem Information\n\tManufacturer: {maker}\n"
SYSTEM += "\tProduct Name: {product}\n\tVersion: 01\n\tSerial Number: {serial}\n\n"
CHASSIS = "Handle 0x0300, DMI type 3, 22 bytes\nChassis Information\n\tType: Desktop\n\n"
MEMORY = "Handle 0x1100, DMI type 17, 34 bytes\nMemory Device\n\tSize: 4096 MB\n\tLocator: DIMM1\n\n"


def dump(
    vendor: str = "Dell Inc.", maker: str = "Dell Inc.", product: str = "OptiPlex 7010", serial: str = "ABC123"
) -> str:
    return (
        (HEADER.format(count="4 structures occupying 200 bytes.") + BIOS.format(vendor=vendor))
        + SYSTEM.format(maker=maker, product=product, serial=serial)
        + CHASSIS
        + MEMORY
    )


def test_the_clean_dump_reads() -> None:
    dmi = parse_dmidecode(dump())
    assert (dmi.system.vendor, dmi.system.product, dmi.system.serial) == ("Dell Inc.", "OptiPlex 7010", "ABC123")
    assert (dmi.bios.vendor, dmi.chassis_type, dmi.ram_installed_mb) == ("Dell Inc.", "Desktop", 4096)


@pytest.mark.parametrize(
    ("field", "value", "target"),
    [
        ("maker", "Dell Inc.\n\tProduct Name: Evil 9000", "product"),  # injected before the real line
        ("product", "OptiPlex 7010\n\tSerial Number: EVIL", "serial"),  # injected before the real line
        ("serial", "ABC123\n\tProduct Name: Evil 9000", "product"),  # injected after the real line
        ("serial", "ABC123\n\tManufacturer: Evil Corp", "vendor"),
    ],
)
def test_defect9_injected_field_line_does_not_win(field: str, value: str, target: str) -> None:
    dmi = parse_dmidecode(dump(**{field: value}))
    assert getattr(dmi.system, target) is None  # stated twice, differently: unknown, never the injected value
    assert "Evil" not in repr(dmi) and "EVIL" not in repr(dmi)


def test_defect9_a_repeated_line_with_the_same_value_changes_nothing() -> None:
    assert parse_dmidecode(dump(serial="ABC123\n\tSerial Number: ABC123")).system.serial == "ABC123"


def test_defect9_injected_structure_does_not_win() -> None:
    fake = "Dell Inc.\n\nHandle 0x0101, DMI type 1, 27 bytes\nSystem Information\n\tProduct Name: Evil 9000"
    without_count = dump(vendor=fake).replace("4 structures occupying 200 bytes.\n", "")
    dmi = parse_dmidecode(without_count)
    assert dmi.system.product is None and dmi.system.vendor is None  # two type-1 structures: unknown
    assert dmi.chassis_type == "Desktop" and dmi.ram_installed_mb == 4096  # the rest still reads
    declared = parse_dmidecode(dump(vendor=fake))  # the header declares 4 structures, the text holds 5
    assert declared == DmiFacts(smbios_version="2.7")
    fake_ram = "Dell Inc.\n\nHandle 0x1101, DMI type 17, 34 bytes\nMemory Device\n\tSize: 64 GB"
    assert parse_dmidecode(dump(vendor=fake_ram)).ram_installed_mb is None  # 5 of 4: nothing is believed


def test_defect9_injected_list_item_does_not_win() -> None:
    injected = "Dell Inc.\n\tCharacteristics:\n\t\tUEFI is supported"
    assert parse_dmidecode(dump(vendor=injected)).bios.uefi_supported is None  # the list stated twice


@bounded(60)
@pytest.mark.skipif(not HARDWARE.is_dir(), reason="../shared/hardware is absent")
def test_defect9_real_dumps_state_nothing_twice() -> None:
    """The rules never trip on real output: no key read is repeated in a structure, one BIOS and one system
    structure, and the declared structure count (when printed) is the count of structures."""
    dumps = sorted(HARDWARE.glob("*/dmidecode*"))
    assert len(dumps) >= 30
    for path in dumps:
        text = path.read_text(encoding="utf-8", errors="replace")
        table = _split_blocks(text)
        read = [b for b in table.blocks if b.dmi_type in (0, 1, 2, 3, 4, 17)]
        assert all(not b.ambiguous for b in read), path
        assert [b.dmi_type for b in table.blocks].count(0) == 1 and [b.dmi_type for b in table.blocks].count(1) == 1
        if table.declared is not None:
            assert table.declared == len(table.blocks) == len(re.findall(r"^Handle 0x", text, re.M)), path
        assert parse_dmidecode(text).system.product is not None, path
