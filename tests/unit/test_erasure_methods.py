"""The method NIST SP 800-88 Rev. 1 says to use, for each captured drive and for the states QEMU cannot
emulate (frozen, locked, count expired, HPA): drives inspected through ``FakeTools`` from the samples; the
states a sample does not show are made from it by rewriting its hdparm Security lines, said so per test."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from provision.agent.erasure.drives import DriveInfo, inspect_drive
from provision.agent.erasure.methods import choose_method
from provision.agent.erasure.nvme import NvmeCaps
from provision.agent.erasure.scsi import ScsiCaps
from provision.wire.erasure import METHODS, ErasePlan, HiddenAreas
from tests.support.erasure_fakes import FakeTools, Override, security_line
from tests.support.paths import SAMPLES

ERASURE = SAMPLES / "erasure"
INTEL, LOCKED, WDC, HPA = (ERASURE / n for n in ("intel-ssdsc2ct240a4", "intel-ssdsc2ct240a4-locked",
                                                 "wdc-pc-sn730", "forensicswiki-hpa"))  # fmt: skip
AUTO = ErasePlan()


def inspect(
    folder: Path | None, name: str = "sda", transport: str | None = "sata", answers: dict[str, Path] | None = None
) -> DriveInfo:
    """The drive ``name`` inspected from ``folder``; ``answers``: "hdparm -N" -> another sample file."""
    dev = f"/dev/{name}"
    extra: dict[tuple[str, ...], Override] = {(*argv.split(), dev): path for argv, path in (answers or {}).items()}
    return inspect_drive(name, Path(dev), size_bytes=240057409536, transport=transport, rotational=None,
                         model=None, serial=None, run=FakeTools({dev: folder}, extra))  # fmt: skip


def variant(tmp_path: Path, source: Path, **lines: bool) -> Path:
    """A copy of ``source`` whose hdparm Security lines are set as given (frozen=True, locked=False ...)."""
    text = (source / "hdparm-I.txt").read_text()
    for name, on in lines.items():
        text = security_line(text, {"expired": "expired: security count"}.get(name, name), on)
    folder = tmp_path / source.name
    folder.mkdir()
    (folder / "hdparm-I.txt").write_text(text)
    return folder


def test_ssd_with_enhanced_security_erase() -> None:
    choice = choose_method(AUTO, inspect(INTEL))
    assert (choice.method, choice.category, choice.pattern) == ("ata-security-erase-enhanced", "purge", "changed")
    assert choice.fallback is not None and "no SANITIZE feature set" in choice.fallback
    assert choice.note is None


def test_normal_security_erase_leaves_zeros_or_ones(tmp_path: Path) -> None:
    """NIST SP 800-88 Rev. 1, Appendix A: the normal SECURITY ERASE UNIT writes binary 0s or 1s."""
    info = inspect(variant(tmp_path, INTEL))
    assert info.ata is not None
    choice = choose_method(AUTO, replace(info, ata=replace(info.ata, enhanced_erase=False)))
    assert (choice.method, choice.pattern, choice.category) == ("ata-security-erase", "zeros-or-ones", "purge")


def test_frozen_ssd_that_stayed_frozen_falls_back_to_overwrite(tmp_path: Path) -> None:
    info = inspect(variant(tmp_path, INTEL, frozen=True))  # the Intel 335 made frozen
    choice = choose_method(AUTO, info)
    assert (choice.method, choice.category, choice.pattern) == ("overwrite", "clear", "zeros")
    assert choice.fallback is not None
    assert "frozen" in choice.fallback and "could not be unfrozen" in choice.fallback
    assert "SSD" in choice.fallback and "NIST Clear, not Purge" in choice.fallback
    refused = choose_method(ErasePlan(unfreeze=False), info)
    assert refused.fallback is not None and "erase: unfreeze: false" in refused.fallback


def test_locked_and_frozen_drive_says_it_refuses_reads_and_writes() -> None:
    choice = choose_method(AUTO, inspect(LOCKED))
    assert choice.method == "overwrite" and choice.fallback is not None
    assert "locked" in choice.fallback and "set it aside" in choice.fallback


def test_locked_drive_not_frozen_tries_provisions_own_password(tmp_path: Path) -> None:
    info = inspect(variant(tmp_path, LOCKED, frozen=False))  # the locked sample unfrozen (by a suspend)
    choice = choose_method(AUTO, info)
    assert choice.method == "ata-security-erase-enhanced"
    assert choice.note is not None and "provision's own erase password" in choice.note


def test_security_count_expired_falls_back(tmp_path: Path) -> None:
    choice = choose_method(AUTO, inspect(variant(tmp_path, INTEL, expired=True)))
    assert choice.method == "overwrite" and choice.fallback is not None and "count" in choice.fallback


def test_ata_sanitize_is_stronger_than_security_erase() -> None:
    info = inspect(INTEL)
    assert info.ata is not None
    crypto = replace(info, ata=replace(info.ata, sanitize=True, sanitize_crypto=True, sanitize_block=True))
    assert (choose_method(AUTO, crypto).method, choose_method(AUTO, crypto).pattern) == (
        "ata-sanitize-crypto",
        "changed",
    )
    block = replace(info, ata=replace(info.ata, sanitize=True, sanitize_block=True, frozen=True))
    assert (choose_method(AUTO, block).method, choose_method(AUTO, block).pattern) == (
        "ata-sanitize-block",
        "zeros-or-ones",
    )


def test_no_ata_erase_command_at_all_on_a_hard_disk() -> None:
    info = inspect(INTEL)
    assert info.ata is not None
    hdd = replace(info, rotational=True, ata=replace(info.ata, security_supported=False))
    choice = choose_method(AUTO, hdd)
    assert choice.method == "overwrite" and choice.fallback is not None
    assert "NIST Clear)" in choice.fallback and "SSD" not in choice.fallback


def test_hpa_reported_vs_removed() -> None:
    info = inspect(INTEL, answers={"hdparm -N": HPA / "hdparm-N.txt"})
    assert info.hidden.hpa is True
    overwrite = choose_method(ErasePlan(method="overwrite"), info)
    assert overwrite.note is not None and "2113 sectors hidden" in overwrite.note
    assert "an overwrite does not reach them" in overwrite.note
    firmware = choose_method(AUTO, info)
    assert firmware.method == "ata-security-erase-enhanced" and firmware.note is not None
    assert "2113 sectors hidden" in firmware.note and "depends on its firmware" in firmware.note
    removed = replace(info, hidden=HiddenAreas(hpa=False, hpa_sectors=0, removed=True))
    note = choose_method(ErasePlan(method="overwrite"), removed).note
    assert note is not None and "removed" in note


def test_nvme_with_sanitize_uses_crypto_erase() -> None:
    choice = choose_method(AUTO, inspect(WDC, "nvme0n1", "nvme"))
    assert (choice.method, choice.category, choice.pattern, choice.fallback) == (
        "nvme-sanitize-crypto", "purge", "changed", None)  # fmt: skip


@pytest.mark.parametrize(
    ("sanicap", "fna", "oacs", "dlfeat", "method", "pattern"),
    [
        (0x2, 0, 0x2, None, "nvme-sanitize-block", "zeros-or-ones"),
        (0x2, 0, 0x2, 1, "nvme-sanitize-block", "zeros"),
        (0, 0x4, 0x2, None, "nvme-format-crypto", "changed"),
        (0, 0, 0x2, 2, "nvme-format-user-data", "ones"),  # e.g. QEMU's NVMe: Format NVM, no Sanitize
        (0, 0x4, 0, None, "overwrite", "zeros"),  # FNA without Format NVM in OACS: no format at all
    ],
)
def test_nvme_without_sanitize_crypto(
    sanicap: int, fna: int, oacs: int, dlfeat: int | None, method: str, pattern: str
) -> None:
    info = inspect(WDC, "nvme0n1", "nvme")
    caps = NvmeCaps(model="X", sanicap=sanicap, fna=fna, oacs=oacs, dlfeat=dlfeat)
    choice = choose_method(AUTO, replace(info, nvme=caps))
    assert (choice.method, choice.pattern) == (method, pattern)
    assert choice.fallback is not None  # a weaker method always says why
    if method == "overwrite":
        assert "NIST Clear, not Purge" in choice.fallback


def test_qemus_nvme_formats_with_user_data_erase() -> None:
    qemu = ERASURE / "qemu-nvme"
    if not (qemu / "nvme-id-ctrl.json").is_file():
        pytest.skip("QEMU's NVMe answers not captured yet (tests/samples/erasure/qemu-nvme)")
    info = inspect(qemu, "nvme0n1", "nvme")
    assert info.nvme is not None and info.nvme.sanicap == 0 and info.nvme.format_nvm and not info.nvme.format_crypto
    choice = choose_method(AUTO, info)  # QEMU's DLFEAT says a deallocated block reads as zeros
    assert (choice.method, choice.category, choice.pattern) == ("nvme-format-user-data", "purge", "zeros")


def test_nvme_that_did_not_answer() -> None:
    info = inspect(None, "nvme0n1", "nvme")
    choice = choose_method(AUTO, info)
    assert choice.method == "overwrite" and choice.fallback is not None and "nvme id-ctrl" in choice.fallback


def test_recipe_overwrite_always_overwrites() -> None:
    for info in (inspect(INTEL), inspect(WDC, "nvme0n1", "nvme")):
        choice = choose_method(ErasePlan(method="overwrite"), info)
        assert (choice.method, choice.category) == ("overwrite", "clear")
        assert choice.fallback is not None and "erase: method: overwrite" in choice.fallback


@pytest.mark.parametrize(("name", "transport", "words"), [
    ("sdb", "usb", "USB bridge"), ("vda", None, "virtio"), ("mmcblk0", None, "eMMC"),
])  # fmt: skip
def test_drives_without_trusted_erase_commands(name: str, transport: str | None, words: str) -> None:
    choice = choose_method(AUTO, inspect(INTEL, name, transport))
    assert choice.method == "overwrite" and choice.fallback is not None and words in choice.fallback


@pytest.mark.parametrize(("caps", "method"), [
    (ScsiCaps(True, True, True, True), "scsi-sanitize-crypto"),
    (ScsiCaps(True, True, True, False), "scsi-sanitize-block"),
    (ScsiCaps(True, True, False, False), "scsi-sanitize-overwrite"),
    (ScsiCaps(True), "overwrite"),
    (ScsiCaps(False), "overwrite"),
])  # fmt: skip
def test_scsi_sanitize_order(caps: ScsiCaps, method: str) -> None:
    info = inspect(None, "sdc", "sas")
    assert info.scsi == ScsiCaps()  # no sg_opcodes answer captured: nothing reported
    assert choose_method(AUTO, replace(info, scsi=caps)).method == method


def test_every_choice_carries_its_nist_category() -> None:
    info = inspect(WDC, "nvme0n1", "nvme")
    for sanicap in range(8):
        choice = choose_method(AUTO, replace(info, nvme=NvmeCaps(sanicap=sanicap, oacs=2)))
        assert choice.category == METHODS[choice.method]
    assert json.dumps(sorted(set(METHODS.values()))) == '["clear", "purge"]'
