"""Every real PC probe in ../shared/hardware is classified to the recipe a workshop expects.

The probes are read where they are (third-party data, never copied into the repository); each test builds a
probe folder in tmp_path that links to them and adds the MAC the server would know from DHCP.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from provision.facts import load_probe
from provision.facts.derive import derive
from provision.recipes import Action, load_dir, select
from tests.support.paths import HARDWARE, REPO

pytestmark = pytest.mark.skipif(not HARDWARE.is_dir(), reason="../shared/hardware is absent")

EXPECTED = {
    "dell-latitude-e6410-0034896ec0f5": "laptop",
    "dell-latitude-e7450-01314f5502da": "laptop",
    "dell-optiplex-3020-00bbed83bd01": "low-ram",  # UEFI, one 4 GB module
    "dell-optiplex-3050-0fabc400baec": "uefi-desktop",
    "dell-optiplex-380-09bb1729c791": "legacy-bios-desktop",
    "dell-optiplex-5060-12d1e16487df": "uefi-desktop",
    "dell-optiplex-7010-0e1bf9ac9d32": "uefi-desktop",
    "dell-optiplex-7040-05f97dd7bba9": "uefi-desktop",
    "dell-optiplex-7060-26e013d9e97d": "uefi-desktop",
    "dell-optiplex-780-1fbfe77c5e14": "legacy-bios-desktop",
    "dell-optiplex-790-1358e3dea1a7": "legacy-bios-desktop",
    "fujitsu-esprimo-p5730-867a0768046b": "legacy-bios-desktop-lowram",  # BIOS era, 4 GB
    "fujitsu-esprimo-p710-4d5ee204d6e9": "uefi-desktop",
    "fujitsu-esprimo-p756-50bbac6ca633": "uefi-desktop",
    "hp-compaq-8000-elite-sff-01cb1f4b1632": "legacy-bios-desktop",  # its 4 MB "Chip" is not RAM
    "hp-compaq-8200-elite-sff-0e42b6e71136": "uefi-desktop",
    "hp-compaq-elite-8300-sff-0ac38124a18e": "low-ram",
    "hp-elitedesk-800-g1-sff-05f64664761b": "uefi-desktop",
    "hp-elitedesk-800-g2-sff-1f4e15f6e14e": "uefi-desktop",
    "hp-elitedesk-800-g3-dm-0c45b1fbe800": "uefi-desktop",  # Mini PC chassis
    "hp-prodesk-400-g3-sff-59ab0d59c301": "uefi-desktop",
    "hp-prodesk-600-g1-sff-0773db3feb67": "uefi-desktop",
    "lenovo-thinkcentre-m58-fe8b51aa268c": "legacy-bios-desktop",
    "lenovo-thinkcentre-m700-71ce7c1423c8": "uefi-desktop",
    "lenovo-thinkcentre-m72e-86afb70013ff": "uefi-desktop",
    "lenovo-thinkcentre-m73-1363a310802e": "uefi-desktop",
    "lenovo-thinkcentre-m83-4458fb495bd4": "uefi-desktop",
    "lenovo-thinkcentre-m910q-6373d0b64656": "uefi-desktop",
    "lenovo-thinkpad-t420-05214dce4a49": "laptop",  # SMBIOS 2.6: no UEFI flag, still a laptop
    "lenovo-thinkpad-t440-02ac18b2ca05": "laptop",
    "lenovo-thinkpad-x240-c951db3ffd17": "laptop",
}


def probe_dir(tmp_path: Path, machine: str, smart: str | None = None) -> Path:
    src = HARDWARE / machine
    dst = tmp_path / machine
    dst.mkdir()
    for name in ("dmidecode.txt", "lspci.txt"):
        if (src / name).exists():
            (dst / name).symlink_to(src / name)
    if smart is not None:
        sample = next((HARDWARE / "smart" / smart).glob("smartctl.*"))
        (dst / f"smartctl-sda{sample.suffix}").symlink_to(sample)
    (dst / "mac").write_text("52:54:00:0a:0b:0c\n")
    return dst


@pytest.fixture(scope="module")
def recipes():
    return load_dir(REPO / "recipes")


def test_every_machine_is_listed():
    machines = {p.name for p in HARDWARE.iterdir() if (p / "dmidecode.txt").exists()}
    assert machines == set(EXPECTED)


@pytest.mark.parametrize(("machine", "expected"), sorted(EXPECTED.items()))
def test_machine_gets_expected_recipe(tmp_path, recipes, machine, expected):
    facts = derive(load_probe(probe_dir(tmp_path, machine)))
    decision = select(recipes, facts)
    assert decision.recipe is not None, decision.reasons
    assert decision.chosen is not None
    assert decision.recipe.name == expected, [o.describe() for o in decision.chosen.outcomes]
    assert decision.action is Action.IMAGE, decision.reasons
    assert decision.plan is not None and decision.plan.hostname == "ecole-0a0b0c".replace(
        "ecole", "portable" if expected == "laptop" else "ecole"
    )


@pytest.mark.parametrize(
    ("machine", "smart", "action", "reason"),
    [
        ("dell-optiplex-780-1fbfe77c5e14", "hitachi-hds721050dle630-failing", Action.REPAIR, "FAILED"),
        (
            "lenovo-thinkcentre-m58-fe8b51aa268c",
            "hitachi-hds721050dle630-failing",
            Action.REPAIR,
            "reallocated",
        ),
        (
            "dell-optiplex-7010-0e1bf9ac9d32",
            "samsung-ssd-970-evo-500gb-media-errors",
            Action.REPAIR,
            "media errors",
        ),
        ("dell-optiplex-7010-0e1bf9ac9d32", "intel-ssdpeknw010t8-660p", Action.IMAGE, None),
        ("hp-elitedesk-800-g1-sff-05f64664761b", "samsung-ssd-860-evo-500gb", Action.IMAGE, None),
        ("hp-elitedesk-800-g1-sff-05f64664761b", "samsung-ssd-840-crc-errors", Action.IMAGE, None),  # cabling
        ("lenovo-thinkpad-t420-05214dce4a49", "hgst-hts725050a7e630-e861b5e1a8fe", Action.IMAGE, None),
    ],
)
def test_smart_health_gate(tmp_path, recipes, machine, smart, action, reason):
    if not (HARDWARE / "smart" / smart).is_dir():
        pytest.skip(f"SMART sample {smart} absent")
    decision = select(recipes, derive(load_probe(probe_dir(tmp_path, machine, smart))))
    assert decision.action is action, decision.reasons
    if reason:
        assert any(reason in r for r in decision.reasons), decision.reasons
