"""The dashboard's plain-language reasons: the reasons the server records (made here by the real code that
makes them where that is cheap) become a sentence and an action, in French and in English."""

from __future__ import annotations

import pytest

from provision.agent.errors import ChunkCorrupt, FetchFailed, ServerUnreachable, TargetTooSmall, VerifyFailed
from provision.dashboard import reasons
from provision.dashboard.i18n import translations
from provision.dashboard.reasons import explain, no_network
from provision.facts.derive import FactValue
from provision.postinstall import WARNINGS
from provision.recipes.schema import Health
from provision.recipes.select import health_failures


def agent(exc: BaseException, what: str = "") -> str:
    """What the agent reports as a run's reason (provision.agent.main: Agent._failed)."""
    return f"{what}{type(exc).__name__}: {exc}"


def said(reason: str, lang: str = "en") -> tuple[str, str]:
    [first, *_] = explain(reason)
    return first.render(translations(lang).gettext)


def test_health_gate_reasons_from_the_real_gate() -> None:
    health = Health(max_reallocated=5, max_pending=0, max_power_on_hours=40000, min_ram_mb=4096, min_disk_gb=100)
    facts: dict[str, FactValue] = {"smart_reallocated": 312, "smart_pending": 3, "smart_power_on_hours": 50000,
                                   "ram_mb": 2048, "disk_gb": 80, "smart_verdict": "failed"}  # fmt: skip
    failures, _ = health_failures(health, facts)
    codes = [e.code for e in explain("; ".join(failures))]
    assert codes == ["disk-smart-failed", "disk-reallocated", "disk-pending", "disk-worn", "ram-low", "disk-small"]
    assert said("; ".join(failures[1:])) == ("disk has 312 reallocated sectors", "replace the disk")
    assert said(failures[1], "fr") == ("le disque a 312 secteurs réalloués", "remplacez le disque")
    assert said(failures[4]) == ("not enough memory: 2048 MiB, 4096 needed", "add memory")


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        (agent(TargetTooSmall("/dev/vda", 1000, 2000)), "disk-too-small"),
        (agent(VerifyFailed("/dev/vda", [], checked=3)), "disk-readback"),
        (agent(FetchFailed("http://s/chunks/x", 5, 30.0, "connection refused")), "network-lost"),
        (agent(ChunkCorrupt(1, 0, "http://s/c", "a" * 64, "b" * 64, 3)), "network-lost"),
        (agent(ServerUnreachable("http://s/api/v1/hello", 5, 30.0, "timeout")), "network-lost"),
        ("NoTargetDisk: no disk can take the image: vda: too small for the image (disk 2 GB); sdb: USB", "disk-none"),
        ("NoTargetDisk: no disk can take the image (8.0 GB): sdb: removable, USB", "disk-usb-only"),
        ("NoTargetDisk: no disk can take the image (8.0 GB): no disks found", "disk-missing"),
        ("AmbiguousTarget: several disks qualify (vda 1 GB, vdb 2 GB); set target_disk.select", "disk-several"),
        ("growing the root file system failed: GrowToolFailed: /dev/vda3: resize2fs: exit status 1", "grow-failed"),
        ("agent reports failure: writing the first-boot credential failed: SeedError: x", "seed-failed"),
        ("verified 3 of 20 chunks; read-back failed", "verify-short"),
        ("hook locale failed with exit status 3: line one / line two", "hook-exit"),
        ("hook bundle timed out: apt-get ...", "hook-timeout"),
        ("hook hostname: 127.0.0.1:22: no SSH answer within 30 s", "hook-ssh"),
        ("hook 'wifi' is not in the server's hooks", "hook-error"),
        ("hooks could not run: RuntimeError: boom", "hooks-error"),
        (f"{WARNINGS}hook zram-swap failed with exit status 1: no zram", "hook-exit"),
        ("superseded by run 0123abcd", "superseded"),
        ("no recipe matches and there is no default", "no-recipe"),
        ("image educ is not available: no image named educ (images: none)", "image-missing"),
        ("recipe 'x' sends matching machines to repair; RAM MiB 1024 < 2048", "recipe-repair"),
        ("the hello carried no probe and no facts: nothing to choose a recipe by", "no-facts"),
    ],
)
def test_recorded_reasons_are_known(reason: str, code: str) -> None:
    found = explain(reason)
    assert found[0].code == code, found
    sentence, action = said(reason, "fr")
    assert sentence and action and "%(" not in sentence + action


def test_the_warnings_prefix_is_the_one_postinstall_writes() -> None:
    assert reasons.WARNINGS == WARNINGS


def test_a_list_of_disks_stays_one_part() -> None:
    [part] = reasons.parts("NoTargetDisk: none: vda: too small; vdb: removable; set target_disk.select")
    assert part.endswith("set target_disk.select")


def test_an_unknown_reason_is_shown_as_recorded_with_a_safe_action() -> None:
    [found] = explain("something <b>new</b> went wrong")
    assert (found.code, found.recorded) == ("unknown", "something <b>new</b> went wrong")
    assert found.render(translations("fr").gettext) == ("problème inattendu", "appelez l\u2019informaticien")
    assert explain(None) == [] and explain("") == []


def test_values_from_a_reason_are_data_not_format() -> None:
    [found] = explain("hook %(x)s%s failed with exit status 2")
    assert found.render(translations("en").gettext)[0] == "step %(x)s%s failed (code 2)"


def test_no_network_in_both_languages() -> None:
    assert no_network().render(translations("en").gettext) == (
        "no network after boot", "check the cable, then restart the PC"
    )  # fmt: skip
    assert no_network().render(translations("fr").gettext)[0] == "pas de réseau après le démarrage"
