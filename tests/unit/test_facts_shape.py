"""Issue 12, defect 5 (the facts part): wrong-typed facts (`{"disks": "x"}`) were accepted and given an imaging
plan. Facts given as JSON (a hello's `facts`, a facts.json file) must be the shape of `Facts.to_dict()`: anything
else is refused with FactsInvalid, a ProbeError (HTTP 422) naming the key, also a ValueError (which
provision.runs turns into its 422 "facts do not read").

Found on the way by the probe fuzz test (test_facts_fuzz.py): numbers of thousands of digits in a probe made
the parsers raise ValueError (a hello with such a probe was a 500); they are unknown now, like numbers past
the 64-bit range that a facts dict would refuse.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from provision.errors import ProbeError
from provision.facts import (
    Facts,
    FactsInvalid,
    facts_from_dict,
    load_facts_json,
    load_probe,
    parse_cpuinfo,
    parse_dmidecode,
    parse_lsblk,
    parse_meminfo,
    parse_smartctl_json,
    parse_smartctl_text,
)
from provision.facts.model import MAX_FACT_INT, fact_int
from tests.support.bounded import bounded
from tests.support.paths import SAMPLE_PROBE

BIG = "9" * 5000


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        ({"disks": "x"}, "disks", "expected a list, got a string"),
        ({"disks": ["sda"]}, "disks[0]", "expected an object, got a string"),
        ({"disks": [{"model": "x"}]}, "disks[0].name", "required key is missing"),
        ({"disks": [{"name": "sda", "size_bytes": "big"}]}, "disks[0].size_bytes", "expected a whole number"),
        ({"disks": [{"name": "sda", "rotational": "yes"}]}, "disks[0].rotational", "expected a boolean"),
        ({"disks": [{"name": "sda", "size_bytes": 2**63}]}, "disks[0].size_bytes", "number out of range"),
        ({"disks": [{"name": "sda", "size_bytes": -1}]}, "disks[0].size_bytes", "number out of range"),
        ({"disks": [{"name": "sda", "mounted": "/"}]}, "disks[0].mounted", "expected a list"),
        ({"mac": 12}, "mac", "expected a string, got a number"),
        ({"firmware": "floppy"}, "firmware", "expected one of uefi, bios, unknown"),
        ({"firmware": ["uefi"]}, "firmware", "expected one of uefi, bios, unknown, got a list"),
        ({"dmi": []}, "dmi", "expected an object, got a list"),
        ({"dmi": {"memory": [{"locator": "DIMM1"}]}}, "dmi.memory[0].size_mb", "required key is missing"),
        ({"dmi": {"memory": [{"size_mb": True}]}}, "dmi.memory[0].size_mb", "expected a whole number, got a boolean"),
        ({"dmi": {"bios": {"uefi_supported": 1}}}, "dmi.bios.uefi_supported", "expected a boolean, got a number"),
        ({"pci": [{"slot": "00:19.0", "modules": ["e1000e", 3]}]}, "pci[0].modules[1]", "expected a string"),
        ({"smart": [{"verdict": "failed", "power_on_hours": True}]}, "smart[0].power_on_hours", "expected a whole"),
        ({"cpu": {"cores": 4.0}}, "cpu.cores", "expected a whole number, got a number"),
        ({"meminfo": []}, "meminfo", "expected an object, got a list"),
        ({"sources": "dmidecode.txt"}, "sources", "expected a list, got a string"),
        ({"dsiks": []}, "dsiks", "unknown key"),
        ({"dmi": {"system": {"vendor": "Dell", "colour": "grey"}}}, "dmi.system.colour", "unknown key"),
    ],
)
def test_defect5_wrong_typed_facts_refused(data: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(FactsInvalid) as caught:
        facts_from_dict(data)
    error = caught.value
    assert (error.key, error.path) == (key, "facts")
    assert error.reason.startswith(message) and str(error).startswith(f"facts: {key}: {message}")
    assert isinstance(error, ProbeError) and isinstance(error, ValueError)
    assert (error.status_code, error.http_body()["key"]) == (422, key)


def test_defect5_a_dict_that_is_not_an_object_is_refused() -> None:
    data: object
    for data in ([], "facts", None, 3):
        with pytest.raises(FactsInvalid, match="expected an object"):
            facts_from_dict(data)  # type: ignore[arg-type]


def test_defect5_load_facts_json_names_the_file_and_the_key(tmp_path: Path) -> None:
    path = tmp_path / "facts.json"
    path.write_text(json.dumps({"disks": "x"}))
    with pytest.raises(FactsInvalid) as caught:
        load_facts_json(path)
    assert (caught.value.path, caught.value.key) == (str(path), "disks")
    assert str(caught.value) == f"{path}: disks: expected a list, got a string"


def test_defect5_every_shape_to_dict_makes_reads_back() -> None:
    facts = load_probe(SAMPLE_PROBE)
    assert facts.disks and facts.pci  # a full probe
    assert facts_from_dict(json.loads(json.dumps(facts.to_dict()))) == facts
    assert facts_from_dict(Facts().to_dict()) == Facts()


@bounded(20)
@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (parse_meminfo, f"MemTotal: {BIG} kB\n"),
        (parse_cpuinfo, f"processor: 0\nphysical id: 0\ncpu cores: {BIG}\n"),
        (parse_smartctl_text, f"Media and Data Integrity Errors:    {BIG}\nPower On Hours: 99999999999999999999\n"),
        (
            parse_smartctl_text,
            f"ID# ATTRIBUTE_NAME FLAG VALUE WORST THRESH TYPE UPDATED WHEN_FAILED RAW_VALUE\n{BIG} x\n",
        ),
        (parse_smartctl_json, '{"power_on_time": {"hours": 99999999999999999999}}'),
        (parse_lsblk, json.dumps({"blockdevices": [{"name": "sda", "type": "disk", "size": BIG}]})),
        (parse_lsblk, '{"blockdevices": [{"name": "sda", "type": "disk", "size": 99999999999999999999}]}'),
        (parse_dmidecode, f"Handle 0x0400, DMI type 4, 42 bytes\nProcessor Information\n\tCore Count: {BIG}\n"),
        (parse_dmidecode, f"Handle 0x1100, DMI type {BIG}, 1 bytes\nMemory Device\n\tSize: {BIG} GB\n"),
    ],
)
def test_huge_numbers_in_a_probe_are_unknown_not_errors(parse: Any, text: str) -> None:
    parsed = parse(text)  # raised ValueError before (a hello carrying such a probe answered 500)
    numbers = [v for v in _values(parsed) if isinstance(v, int) and not isinstance(v, bool)]
    assert all(0 <= n <= MAX_FACT_INT for n in numbers)


def _values(value: object) -> list[object]:
    if isinstance(value, tuple | list):
        return [v for item in value for v in _values(item)]
    if hasattr(value, "__dataclass_fields__"):
        return [v for name in value.__dataclass_fields__ for v in _values(getattr(value, name))]
    return [value]


def test_fact_int() -> None:
    assert [fact_int(v) for v in ("12", " 7 ", 0, MAX_FACT_INT)] == [12, 7, 0, MAX_FACT_INT]
    assert [fact_int(v) for v in (BIG, "-1", -1, MAX_FACT_INT + 1, True, 1.0, "1e3", None, "")] == [None] * 9
