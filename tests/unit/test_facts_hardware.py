"""The parsers over the 31 real machine probes of ../shared/hardware/ (read in place, never copied).

Expected values are those of the table in ../shared/hardware/README.md. Where the README shows a normalised
form the test says so: the README collapses runs of blanks in CPU strings, the parser keeps the firmware's
string unchanged (only surrounding blanks stripped).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from provision.facts import Facts, PciDevice, load_probe, parse_dmidecode, parse_lspci
from tests.support.paths import HARDWARE

# DMI identity, per README table. Folder names without their hwid suffix; "-" = None (placeholder/blank).
# vendor is the DMI Manufacturer as the firmware wrote it (the README's "vendor" column is the brand);
# Lenovo puts the machine type in Product Name and the model in Version.
IDENTITY = """
dell-optiplex-3020       | Dell Inc.       | OptiPlex 3020               | 01
dell-optiplex-3050       | Dell Inc.       | OptiPlex 3050               | -
dell-optiplex-380        | Dell Inc.       | OptiPlex 380                | -
dell-optiplex-5060       | Dell Inc.       | OptiPlex 5060               | -
dell-optiplex-7010       | Dell Inc.       | OptiPlex 7010               | 01
dell-optiplex-7040       | Dell Inc.       | OptiPlex 7040               | -
dell-optiplex-7060       | Dell Inc.       | OptiPlex 7060               | -
dell-optiplex-780        | Dell Inc.       | OptiPlex 780                | -
dell-optiplex-790        | Dell Inc.       | OptiPlex 790                | 01
hp-compaq-8000-elite-sff | Hewlett-Packard | HP Compaq 8000 Elite SFF PC | -
hp-compaq-8200-elite-sff | Hewlett-Packard | HP Compaq 8200 Elite SFF PC | -
hp-compaq-elite-8300-sff | Hewlett-Packard | HP Compaq Elite 8300 SFF    | -
hp-elitedesk-800-g1-sff  | Hewlett-Packard | HP EliteDesk 800 G1 SFF     | -
hp-elitedesk-800-g2-sff  | HP              | HP EliteDesk 800 G2 SFF     | -
hp-elitedesk-800-g3-dm   | HP              | HP EliteDesk 800 G3 DM 35W  | -
hp-prodesk-400-g3-sff    | HP              | HP ProDesk 400 G3 SFF       | -
hp-prodesk-600-g1-sff    | Hewlett-Packard | HP ProDesk 600 G1 SFF       | -
lenovo-thinkcentre-m58   | LENOVO          | 6258D2G                     | ThinkCentre M58
lenovo-thinkcentre-m700  | LENOVO          | 10GR004VMX                  | ThinkCentre M700
lenovo-thinkcentre-m72e  | LENOVO          | 2116CTO                     | ThinkCentre M72e
lenovo-thinkcentre-m73   | LENOVO          | 10AXA204FR                  | ThinkCentre M73
lenovo-thinkcentre-m83   | LENOVO          | 10AGA0CTMC                  | ThinkCentre M83
lenovo-thinkcentre-m910q | LENOVO          | 10MUS17J00                  | ThinkCentre M910q
fujitsu-esprimo-p5730    | FUJITSU SIEMENS | ESPRIMO P5730               | -
fujitsu-esprimo-p710     | FUJITSU         | ESPRIMO P710                | -
fujitsu-esprimo-p756     | FUJITSU         | ESPRIMO_P756                | -
dell-latitude-e6410      | Dell Inc.       | Latitude E6410              | 0001
dell-latitude-e7450      | Dell Inc.       | Latitude E7450              | -
lenovo-thinkpad-t420     | LENOVO          | 4177CTO                     | ThinkPad T420
lenovo-thinkpad-t440     | LENOVO          | 20B6005BUS                  | ThinkPad T440
lenovo-thinkpad-x240     | LENOVO          | 20AL0067RT                  | ThinkPad X240
"""

# BIOS version / date, SMBIOS, "UEFI is supported", RAM GB (modules), per README table.
FIRMWARE = """
dell-optiplex-3020        | A06 / 11/17/2014                             | 2.7   | yes | 4  | 1
dell-optiplex-3050        | 1.24.0 / 12/22/2022                          | 3.0.0 | yes | 16 | 2
dell-optiplex-380         | A07 / 06/13/2012                             | 2.5   | no  | 8  | 2
dell-optiplex-5060        | 1.26.0 / 08/01/2023                          | 3.1.1 | yes | 8  | 1
dell-optiplex-7010        | A29 / 06/28/2018                             | 2.7   | yes | 16 | 4
dell-optiplex-7040        | 1.4.5 / 06/27/2016                           | 2.8   | yes | 16 | 2
dell-optiplex-7060        | 1.2.22 / 11/01/2018                          | 3.1.1 | yes | 16 | 1
dell-optiplex-780         | A15 / 08/06/2013                             | 2.5   | no  | 8  | 2
dell-optiplex-790         | A22 / 07/03/2018                             | 2.6   | no  | 8  | 4
hp-compaq-8000-elite-sff  | 786G7 v01.02 / 10/22/2009                    | 2.6   | no  | 8  | 4
hp-compaq-8200-elite-sff  | J01 v02.15 / 11/10/2011                      | 2.7   | yes | 8  | 4
hp-compaq-elite-8300-sff  | K01 v02.90 / 07/16/2013                      | 2.7   | yes | 4  | 1
hp-elitedesk-800-g1-sff   | L01 v02.65 / 07/13/2015                      | 2.7   | yes | 12 | 3
hp-elitedesk-800-g2-sff   | N01 Ver. 02.17 / 11/01/2016                  | 2.7   | yes | 8  | 1
hp-elitedesk-800-g3-dm    | P21 Ver. 02.11 / 11/07/2017                  | 3.0.0 | yes | 8  | 2
hp-prodesk-400-g3-sff     | N03 Ver. 02.09 / 11/01/2016                  | 2.7   | yes | 16 | 2
hp-prodesk-600-g1-sff     | L01 v02.57 / 12/11/2014                      | 2.7   | yes | 8  | 2
lenovo-thinkcentre-m58    | 5CKT61AUS / 02/01/2010                       | 2.5   | no  | 8  | 4
lenovo-thinkcentre-m700   | M05KT77A / 12/19/2017                        | 3.0.0 | yes | 16 | 2
lenovo-thinkcentre-m72e   | F9KT47AUS / 06/26/2013                       | 2.7   | yes | 8  | 2
lenovo-thinkcentre-m73    | FHKT54AUS / 12/29/2014                       | 2.8   | yes | 8  | 1
lenovo-thinkcentre-m83    | FBKTA1AUS / 10/22/2014                       | 2.8   | yes | 8  | 2
lenovo-thinkcentre-m910q  | M1AKT22A / 06/27/2017                        | 3.0.0 | yes | 8  | 1
fujitsu-esprimo-p5730     | 6.00 R1.18-02.2811.A1 / 10/21/2009           | 2.5   | no  | 4  | 3
fujitsu-esprimo-p710      | V4.6.5.3 R1.16.0 for D3161-A1x / 10/29/2012  | 2.7   | yes | 16 | 4
fujitsu-esprimo-p756      | V5.0.0.11 R1.11.0 for D3401-A1x / 02/02/2016 | 3.0.0 | yes | 8  | 2
dell-latitude-e6410       | A15 / 07/11/2013                             | 2.6   | no  | 8  | 2
dell-latitude-e7450       | A24 / 04/11/2020                             | 2.8   | yes | 8  | 1
lenovo-thinkpad-t420      | 83ET79WW (1.49 ) / 09/05/2016                | 2.6   | no  | 8  | 2
lenovo-thinkpad-t440      | GJET77WW (2.27 ) / 05/20/2014                | 2.7   | yes | 8  | 1
lenovo-thinkpad-x240      | GIET99WW (2.49 ) / 03/17/2020                | 2.7   | yes | 8  | 1
"""

# DMI chassis type, and type 4 Version with runs of blanks collapsed as in the README ("-": "Not Specified",
# OptiPlex 380/780).
CHASSIS_CPU = """
dell-optiplex-3020       | Space-saving        | Intel(R) Core(TM) i5-4590 CPU @ 3.30GHz
dell-optiplex-3050       | Desktop             | Intel(R) Core(TM) i3-6100 CPU @ 3.70GHz
dell-optiplex-380        | Desktop             | -
dell-optiplex-5060       | Desktop             | Intel(R) Core(TM) i5-8400 CPU @ 2.80GHz
dell-optiplex-7010       | Space-saving        | Intel(R) Core(TM) i5-3470 CPU @ 3.20GHz
dell-optiplex-7040       | Desktop             | Intel(R) Core(TM) i7-6700 CPU @ 3.40GHz
dell-optiplex-7060       | Desktop             | Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz
dell-optiplex-780        | Mini Tower          | -
dell-optiplex-790        | Desktop             | Intel(R) Core(TM) i5-2400 CPU @ 3.10GH
hp-compaq-8000-elite-sff | Low Profile Desktop | Intel(R) Core(TM)2 Duo CPU E8400 @ 3.00GHz
hp-compaq-8200-elite-sff | Mini Tower          | Intel(R) Core(TM) i5-2400 CPU @ 3.10GHz
hp-compaq-elite-8300-sff | Low Profile Desktop | Intel(R) Core(TM) i3-3220 CPU @ 3.30GHz
hp-elitedesk-800-g1-sff  | Low Profile Desktop | Intel(R) Core(TM) i5-4590 CPU @ 3.30GHz
hp-elitedesk-800-g2-sff  | Low Profile Desktop | Intel(R) Core(TM) i5-6500 CPU @ 3.20GHz
hp-elitedesk-800-g3-dm   | Mini PC             | Intel(R) Core(TM) i5-6500T CPU @ 2.50GHz
hp-prodesk-400-g3-sff    | Low Profile Desktop | Intel(R) Core(TM) i5-6500 CPU @ 3.20GHz
hp-prodesk-600-g1-sff    | Low Profile Desktop | Intel(R) Core(TM) i5-4590 CPU @ 3.30GHz
lenovo-thinkcentre-m58   | Desktop             | Pentium(R) Dual-Core CPU E5400 @ 2.70GHz
lenovo-thinkcentre-m700  | Desktop             | Intel(R) Core(TM) i7-6700 CPU @ 3.40GHz
lenovo-thinkcentre-m72e  | Desktop             | Intel(R) Core(TM) i7-3770 CPU @ 3.40GHz
lenovo-thinkcentre-m73   | Desktop             | Intel(R) Core(TM) i3-4330T CPU @ 3.00GHz
lenovo-thinkcentre-m83   | Desktop             | Intel(R) Core(TM) i3-4330 CPU @ 3.50GHz
lenovo-thinkcentre-m910q | Desktop             | Intel(R) Core(TM) i5-6600T CPU @ 2.70GHz
fujitsu-esprimo-p5730    | Mini Tower          | Intel(R) Core(TM)2 Duo CPU E7500
fujitsu-esprimo-p710     | Mini Tower          | Intel(R) Core(TM) i5-3570 CPU @ 3.40GHz
fujitsu-esprimo-p756     | Mini Tower          | Intel(R) Core(TM) i5-6600 CPU @ 3.30GHz
dell-latitude-e6410      | Laptop              | Intel(R) Core(TM) i7 CPU M 640 @ 2.80GH
dell-latitude-e7450      | Laptop              | Intel(R) Core(TM) i5-5300U CPU @ 2.30GHz
lenovo-thinkpad-t420     | Notebook            | Intel(R) Core(TM) i7-2620M CPU @ 2.70GHz
lenovo-thinkpad-t440     | Notebook            | Intel(R) Core(TM) i5-4300U CPU @ 1.90GHz
lenovo-thinkpad-x240     | Notebook            | Intel(R) Core(TM) i5-4200U CPU @ 1.60GHz
"""

# The 11 machines with lspci.txt: device blocks, first Ethernet controller "id driver", and every
# SATA/IDE/RAID/NVMe controller (class 0101/0104/0106/0108) as "id driver" ("-" = no driver bound), per the
# README's "worth a test case" list.
PCI = """
dell-optiplex-3050     | 12 | 10ec:8168 r8169  | 8086:2822 ahci
dell-optiplex-380      | 17 | 14e4:1692 tg3    | 8086:27df ata_piix, 8086:27c0 ata_piix
dell-optiplex-5060     | 14 | 8086:15bc e1000e | 8086:2822 ahci
dell-optiplex-7010     | 15 | 8086:1502 e1000e | 8086:1e02 ahci, 144d:a809 nvme
dell-optiplex-780      | 23 | 8086:10de e1000e | 8086:2e16 ata_generic, 8086:3a02 ahci
dell-optiplex-790      | 15 | 8086:1502 e1000e | 8086:1c02 ahci
hp-prodesk-600-g1-sff  | 13 | 8086:153a e1000e | 8086:8c02 ahci
lenovo-thinkcentre-m58 | 21 | 8086:10de e1000e | 8086:2e16 -, 8086:3a00 ata_piix, 8086:3a06 ata_piix
lenovo-thinkcentre-m73 | 12 | 8086:153b e1000e | 8086:8c02 ahci
lenovo-thinkcentre-m83 | 13 | 8086:153a e1000e | 8086:8c02 ahci
lenovo-thinkpad-x240   | 15 | 8086:155a e1000e | 8086:9c03 ahci
"""
STORAGE_CLASSES = {"0101", "0104", "0106", "0108"}


def _table(text: str) -> dict[str, list[str | None]]:
    rows: dict[str, list[str | None]] = {}
    for line in text.strip().splitlines():
        name, *cells = (cell.strip() for cell in line.split("|"))
        rows[name] = [None if cell == "-" else cell for cell in cells]
    return rows


@dataclass(frozen=True)
class Machine:
    name: str
    vendor: str | None
    product: str | None
    version: str | None
    chassis: str | None
    bios: str | None
    smbios: str | None
    uefi: bool
    ram_gb: int
    modules: int
    cpu: str | None


def _machines() -> list[Machine]:
    identity, firmware, chassis_cpu = _table(IDENTITY), _table(FIRMWARE), _table(CHASSIS_CPU)
    assert identity.keys() == firmware.keys() == chassis_cpu.keys()
    machines = []
    for name, (vendor, product, version) in identity.items():
        bios, smbios, uefi, ram_gb, modules = firmware[name]
        chassis, cpu = chassis_cpu[name]
        machines.append(
            Machine(
                name=name,
                vendor=vendor,
                product=product,
                version=version,
                chassis=chassis,
                bios=bios,
                smbios=smbios,
                uefi=uefi == "yes",
                ram_gb=int(ram_gb or 0),
                modules=int(modules or 0),
                cpu=cpu,
            )
        )
    return machines


MACHINES = _machines()
PCI_CASES = _table(PCI)


def _folder(name: str) -> Path:
    """The fixture folder ``<name>-<hwid>``; skips the test when the shared fixtures are absent."""
    if not HARDWARE.is_dir():
        pytest.skip(f"shared hardware fixtures not found at {HARDWARE}")
    found = [p for p in HARDWARE.iterdir() if p.is_dir() and re.fullmatch(rf"{re.escape(name)}-[0-9a-f]{{12}}", p.name)]
    assert len(found) == 1, f"expected one fixture folder for {name}, found {found}"
    return found[0]


def _probe(name: str) -> Facts:
    return load_probe(_folder(name))


def test_tables_cover_every_machine_folder() -> None:
    if not HARDWARE.is_dir():
        pytest.skip(f"shared hardware fixtures not found at {HARDWARE}")
    folders = sorted(p.name[:-13] for p in HARDWARE.iterdir() if (p / "dmidecode.txt").is_file())
    assert len(folders) == 31
    assert sorted(m.name for m in MACHINES) == folders
    with_lspci = sorted(p.name[:-13] for p in HARDWARE.iterdir() if (p / "lspci.txt").is_file())
    assert sorted(PCI_CASES) == with_lspci


@pytest.mark.parametrize("m", MACHINES, ids=lambda m: m.name)
def test_machine_dmi(m: Machine) -> None:
    facts = _probe(m.name)
    dmi = facts.dmi
    assert facts.warnings == ()
    assert "dmidecode.txt" in facts.sources
    assert (dmi.system.vendor, dmi.system.product, dmi.system.version) == (m.vendor, m.product, m.version)
    assert dmi.system.serial is None and dmi.system.uuid is None  # masked "--" by the publisher
    assert dmi.chassis_type == m.chassis
    assert f"{dmi.bios.version} / {dmi.bios.date}" == m.bios
    assert dmi.smbios_version == m.smbios
    assert dmi.bios.uefi_supported is m.uefi
    # README: in this set the flag tracks the SMBIOS version exactly (absent in 2.5/2.6, present from 2.7).
    assert dmi.bios.uefi_supported is (m.smbios not in ("2.5", "2.6"))
    assert dmi.ram_installed_mb == m.ram_gb * 1024
    assert len(dmi.memory) == m.modules
    assert all(d.size_mb >= 256 for d in dmi.memory)
    assert (" ".join(dmi.cpu_version.split()) if dmi.cpu_version else None) == m.cpu
    assert dmi.cpu_cores is not None and dmi.cpu_threads is not None
    assert 1 <= dmi.cpu_cores <= dmi.cpu_threads


def test_cpu_strings_are_kept_as_the_firmware_wrote_them() -> None:
    dmi = _probe("dell-latitude-e6410").dmi
    assert dmi.cpu_version == "Intel(R) Core(TM) i7 CPU       M 640  @ 2.80GH"  # inner blanks kept
    dmi = _probe("dell-optiplex-380").dmi
    assert (dmi.cpu_version, dmi.cpu_family, dmi.cpu_cores) == (None, "Core 2 Quad", 4)


def test_hp_8000_flash_chip_is_not_ram_but_t440_chip_module_is() -> None:
    hp = parse_dmidecode((_folder("hp-compaq-8000-elite-sff") / "dmidecode.txt").read_text())
    assert [m.size_mb for m in hp.memory] == [2048] * 4  # the 4 MB "Chip" is left out
    t440 = _probe("lenovo-thinkpad-t440").dmi
    assert [(m.size_mb, m.form_factor) for m in t440.memory] == [(8192, "Chip")]


def _first(devices: tuple[PciDevice, ...], class_code: str) -> PciDevice:
    return next(d for d in devices if d.class_code == class_code)


@pytest.mark.parametrize("name", sorted(PCI_CASES))
def test_machine_lspci(name: str) -> None:
    count, nic, storage = PCI_CASES[name]
    facts = _probe(name)
    assert "lspci.txt" in facts.sources
    assert len(facts.pci) == int(count or 0)
    assert all(d.pci_id is not None and d.class_code is not None for d in facts.pci)
    first_nic = _first(facts.pci, "0200")
    assert f"{first_nic.pci_id} {first_nic.driver}" == nic
    found = [f"{d.pci_id} {d.driver or '-'}" for d in facts.pci if d.class_code in STORAGE_CLASSES]
    assert ", ".join(found) == storage


def test_sata_raid_mode_on_optiplex_5060_and_3050() -> None:
    for name in ("dell-optiplex-5060", "dell-optiplex-3050"):
        raid = _first(_probe(name).pci, "0104")
        assert (raid.class_name, raid.pci_id, raid.driver) == ("RAID bus controller", "8086:2822", "ahci")
        assert raid.description == "Intel Corporation SATA Controller [RAID mode]"


@pytest.mark.parametrize(
    ("name", "sata_ids"),
    [("lenovo-thinkcentre-m58", ["8086:3a00", "8086:3a06"]), ("dell-optiplex-380", ["8086:27c0"])],
)
def test_sata_in_legacy_ide_mode(name: str, sata_ids: list[str]) -> None:
    ide = [d for d in _probe(name).pci if d.pci_id in sata_ids]
    assert [(d.class_code, d.class_name, d.driver) for d in ide] == [("0101", "IDE interface", "ata_piix")] * len(
        sata_ids
    )


def test_optiplex_7010_nvme_and_x240_wifi() -> None:
    nvme = _first(_probe("dell-optiplex-7010").pci, "0108")
    assert (nvme.slot, nvme.pci_id, nvme.subsystem, nvme.driver) == (
        "02:00.0",
        "144d:a809",
        "144d:a801",
        "nvme",
    )
    wifi = _first(_probe("lenovo-thinkpad-x240").pci, "0280")
    assert (wifi.pci_id, wifi.driver, wifi.modules) == ("8086:08b2", "iwlwifi", ("iwlwifi", "wl"))


@pytest.mark.parametrize(
    ("name", "pci_id", "driver"),
    [
        ("dell-optiplex-380", "10de:1049", "nvidia"),
        ("dell-optiplex-790", "1002:9498", "radeon"),
        ("lenovo-thinkcentre-m58", "1002:9540", "radeon"),
    ],
)
def test_add_in_gpu_next_to_the_chipset(name: str, pci_id: str, driver: str) -> None:
    add_in = [d for d in _probe(name).pci if d.class_code == "0300" and not d.slot.startswith("00:")]
    assert [(d.pci_id, d.driver) for d in add_in] == [(pci_id, driver)]


_PROG_IF = re.compile(r" \(prog-if [^()]*\)$")


@pytest.mark.parametrize("name", sorted(PCI_CASES))
def test_plain_lspci_nn_variant_gives_the_same_ids(name: str) -> None:
    text = (_folder(name) / "lspci.txt").read_text()
    first_lines = [line for line in text.splitlines() if line and not line[0].isspace()]
    plain = "\n".join(_PROG_IF.sub("", line) for line in first_lines) + "\n"
    assert "prog-if" not in plain
    from_plain = parse_lspci(plain)
    from_verbose = parse_lspci(text)
    assert len(from_plain) == len(first_lines)
    assert [(d.slot, d.class_code, d.pci_id, d.description) for d in from_plain] == [
        (d.slot, d.class_code, d.pci_id, d.description) for d in from_verbose
    ]
    assert all(d.driver is None and d.subsystem is None for d in from_plain)
