"""Fuzz the probe parsers (issue 12): no unhandled exception, no hang, and facts that read back.

- ``probe-parsers``: every real probe output we have (../shared/hardware: dmidecode, lspci, smartctl text and
  JSON; tests/samples: lsblk, lspci, meminfo, cpuinfo) mutated with tokens of its format (Handle lines,
  ``Key: value`` lines, brackets, huge numbers, control characters), and random text, through its parser
  (dmidecode, lspci, lsblk, meminfo, cpuinfo, smartctl JSON and text); random text through all of them. Each
  result, as a part of ``Facts``, must read back through ``Facts.to_dict`` -> JSON -> ``facts_from_dict``
  (defect 5's reader accepts everything a parser can produce), and every 25th case a probe folder of the
  mutant goes through ``load_probe``.
- ``facts-dict``: mutated ``Facts.to_dict()`` documents through ``facts_from_dict``: Facts or FactsInvalid only.

Counts are printed in the terminal summary (tests/support/fuzz.py); PROVISION_FUZZ_EXAMPLES=100000 runs the
long version (docs/recipes.md, "Fuzzing").
"""

from __future__ import annotations

import copy
import json
import logging
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st

from provision.facts import (
    Facts,
    FactsInvalid,
    facts_from_dict,
    load_probe,
    parse_cpuinfo,
    parse_dmidecode,
    parse_lsblk,
    parse_lspci,
    parse_meminfo,
    parse_smartctl_json,
    parse_smartctl_text,
)
from provision.facts.model import CpuInfo, MemInfo
from tests.support import fuzz
from tests.support.mutate import mutate
from tests.support.paths import HARDWARE, SAMPLE_PROBE, SAMPLES


@dataclass(frozen=True)
class Kind:
    """One probe format: its parser, how its result sits in Facts, its file name, tokens of its format."""

    parse: Callable[[str], Any]
    into: Callable[[Any], Facts]
    file: str
    tokens: tuple[str, ...]


COMMON = ("\n", "\t", "\t\t", ": ", "\x00", "\ufffd", "9" * 30, "9" * 5000, "-1", "0", " ", "\r\n", "{", "}", "[")
KINDS = {
    "dmidecode": Kind(
        parse_dmidecode,
        lambda r: Facts(dmi=r),
        "dmidecode.txt",
        (
            *COMMON,
            "Handle 0x0100, DMI type 1, 27 bytes\nSystem Information\n",
            "Handle 0x1100, DMI type 17, 34 bytes\n",
            "\tProduct Name: Evil\n",
            "\tSize: 99999999999999 TB\n",
            "\tCore Count: ",
            "\tStatus: Unpopulated\n",
            "3 structures occupying 100 bytes.\n",
            "\tCharacteristics:\n\t\tUEFI is supported\n",
            "SMBIOS 9.9 present.\n",
        ),
    ),
    "lspci": Kind(
        lambda t: tuple(parse_lspci(t)),
        lambda r: Facts(pci=r),
        "lspci.txt",
        (
            *COMMON,
            "00:19.0 Ethernet controller [0200]: Intel [8086:10de]\n",
            "\tKernel driver in use: e1000e\n",
            "\tKernel modules: ",
            "[ffff:ffff]",
            " (rev 05)",
            "\tSubsystem: Dell [1028:0446]\n",
        ),
    ),
    "lsblk": Kind(
        parse_lsblk,
        lambda r: Facts(disks=r),
        "lsblk.json",
        (
            *COMMON,
            '"size": 99999999999999999999999',
            '"size": "' + "9" * 5000 + '"',
            '"type": "disk"',
            '"rm": "1"',
            '"children": [',
            "]",
            "null",
            "true",
            '"tran": "usb"',
            ",",
        ),
    ),
    "meminfo": Kind(
        parse_meminfo,
        lambda r: Facts(meminfo=r),
        "meminfo",
        (*COMMON, "MemTotal:       ", " kB\n", "MemTotal: " + "9" * 5000 + " kB\n"),
    ),
    "cpuinfo": Kind(
        parse_cpuinfo,
        lambda r: Facts(cpu=r),
        "cpuinfo",
        (*COMMON, "processor\t: 1\n", "physical id\t: 0\n", "cpu cores\t: ", "model name\t: X\n", "flags\t\t: "),
    ),
    "smartctl-json": Kind(
        parse_smartctl_json,
        lambda r: Facts(smart=(r,)),
        "smartctl-sda.json",
        (
            *COMMON,
            '"raw": {"value": 99999999999999999999999}',
            '"power_on_time": {"hours": -5}',
            '"passed": false',
            '"nvme_smart_health_information_log": {',
            "null",
            ",",
        ),
    ),
    "smartctl-text": Kind(
        parse_smartctl_text,
        lambda r: Facts(smart=(r,)),
        "smartctl-sda.txt",
        (
            *COMMON,
            "SMART overall-health self-assessment test result: FAILED!\n",
            "Power On Hours: 1,234\n",
            "  5 Reallocated_Sector_Ct   0x0033   100   100   010    Pre-fail  Always       -       ",
            "ID# ATTRIBUTE_NAME          FLAG     VALUE WORST THRESH TYPE      UPDATED  WHEN_FAILED RAW_VALUE\n",
        ),
    ),
}


def seeds() -> list[tuple[str, str]]:
    """(kind, text) of every real probe output we have."""
    found = [
        ("lsblk", SAMPLES / "lsblk-vm.json"), ("lsblk", SAMPLES / "lsblk-pc.json"),
        ("lspci", SAMPLES / "lspci-nn-vm.txt"), ("lspci", SAMPLES / "lspci-vvnn-vm.txt"),
        ("meminfo", SAMPLES / "meminfo-vm.txt"), ("cpuinfo", SAMPLES / "cpuinfo-vm.txt"),
        ("cpuinfo", SAMPLE_PROBE / "cpuinfo"),
    ]  # fmt: skip
    if HARDWARE.is_dir():
        found += [("dmidecode", p) for p in sorted(HARDWARE.glob("*/dmidecode.txt"))]
        found += [("lspci", p) for p in sorted(HARDWARE.glob("*/lspci.txt"))]
        found += [("smartctl-json", p) for p in sorted(HARDWARE.glob("smart/*/smartctl.json"))]
        found += [("smartctl-text", p) for p in sorted(HARDWARE.glob("smart/*/smartctl.txt"))]
    else:  # the repository alone: a small dmidecode of our own
        found.append(("dmidecode", SAMPLE_PROBE / "README"))
    return [(kind, path.read_text(encoding="utf-8", errors="replace")) for kind, path in found]


def reads_back(facts: Facts) -> None:
    assert facts_from_dict(json.loads(json.dumps(facts.to_dict()))) == facts


@pytest.fixture
def quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="provision")


def test_fuzz_probe_parsers(quiet: None) -> None:
    target = fuzz.target("probe-parsers", examples=1200, budget=60, deadline=2, hang=20)
    every = seeds()
    names = sorted(KINDS)
    counts = dict.fromkeys([*names, "all-parsers", "load_probe"], 0)

    @target.given(
        st.one_of(
            st.tuples(st.sampled_from(every), st.randoms(use_true_random=False)).map(
                lambda s: (s[0][0], mutate(s[1], s[0][1], KINDS[s[0][0]].tokens))
            ),
            st.tuples(st.sampled_from(names), st.text(max_size=400)),
            st.tuples(st.just("all-parsers"), st.text(max_size=400)),
        ),
        st.integers(0, 24),
    )
    def case(item: tuple[str, str], every_25th: int) -> None:
        name, text = item
        counts[name] += 1
        for kind in KINDS.values() if name == "all-parsers" else [KINDS[name]]:
            reads_back(kind.into(kind.parse(text)))
        if every_25th == 0 and name != "all-parsers":
            counts["load_probe"] += 1
            with tempfile.TemporaryDirectory() as folder:
                (Path(folder) / KINDS[name].file).write_text(text, encoding="utf-8", errors="replace")
                reads_back(load_probe(Path(folder)))

    case()
    target.done()
    print(f"probe-parsers per format: {counts}")


def test_fuzz_facts_dict(quiet: None) -> None:
    target = fuzz.target("facts-dict", examples=500, budget=30, deadline=1, hang=10)
    full = load_probe(SAMPLE_PROBE).to_dict()
    full["dmi"] = Facts(dmi=parse_dmidecode(_some_dmidecode())).to_dict()["dmi"]  # a real machine's DMI
    outcomes = {"facts": 0, "refused": 0}

    @target.given(st.randoms(use_true_random=False))
    def case(rng: random.Random) -> None:
        data = _mutated_dict(rng, full)
        try:
            facts = facts_from_dict(data)
        except FactsInvalid as exc:
            outcomes["refused"] += 1
            assert exc.status_code == 422 and str(exc).startswith("facts: ")
            return
        outcomes["facts"] += 1
        reads_back(facts)
        assert isinstance(facts.cpu, CpuInfo) and isinstance(facts.meminfo, MemInfo)

    case()
    target.done()
    assert outcomes["refused"] and outcomes["facts"], outcomes
    print(f"facts-dict outcomes: {outcomes}")


def _some_dmidecode() -> str:
    dumps = sorted(HARDWARE.glob("*/dmidecode.txt")) if HARDWARE.is_dir() else []
    return dumps[0].read_text(encoding="utf-8", errors="replace") if dumps else ""


ODD_VALUES: list[Any] = [None, "", "x", 0, -1, 2**63, 1.5, True, [], {}, ["x"], [{}], {"name": "sda"}, "\ud800"]


def _mutated_dict(rng: random.Random, doc: dict[str, Any]) -> Any:
    """``doc`` with one to three values somewhere inside replaced, removed, or a key added."""
    data = json.loads(json.dumps(doc))
    for _ in range(rng.randint(1, 3)):
        node: Any = data
        path: list[Any] = []
        while isinstance(node, dict | list) and node and rng.random() < 0.7:
            key = rng.choice(sorted(node) if isinstance(node, dict) else range(len(node)))
            path.append(key)
            node = node[key]
        if not path:
            continue
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        how = rng.randrange(3)
        if how == 0 and isinstance(parent, dict):
            del parent[path[-1]]
        elif how == 1 and isinstance(parent, dict):
            parent[rng.choice(["extra", "size", "name"])] = copy.deepcopy(rng.choice(ODD_VALUES))
        else:
            parent[path[-1]] = copy.deepcopy(rng.choice(ODD_VALUES))
    return data
