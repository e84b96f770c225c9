"""The erasure method for one drive, per NIST SP 800-88 Rev. 1 (Appendix A, "Minimum Sanitization
Recommendations"): the strongest Purge the drive's own firmware offers, else one overwrite pass (Clear).

Order, strongest first (``choose_method``):

- NVMe: Sanitize crypto erase > Sanitize block erase > Format NVM SES=2 (crypto, FNA bit 2) > Format NVM
  SES=1 (user data erase) > overwrite. (Sanitize overwrite is not used: slow, and it wears flash.)
- ATA: SANITIZE CRYPTO SCRAMBLE > SANITIZE BLOCK ERASE > SECURITY ERASE UNIT enhanced > normal (the drive
  not frozen, or unfrozen by ``prepare_drive``; not "count expired") > overwrite.
- SCSI/SAS: SANITIZE cryptographic erase > block erase > overwrite service action > overwrite.
- USB, virtio, eMMC/SD and drives that did not answer: overwrite.

Appendix A makes ATA SECURITY ERASE UNIT a Purge for hard disks and for SSDs (when the drive implements it
right: the verification checks), and an overwrite of a flash drive only a Clear: its spare and remapped
blocks are never reached. ``Choice.fallback`` says in plain words why a weaker method was chosen;
``Choice.pattern`` says what the verification must then find (``wire.erasure.Pattern``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from provision.agent.erasure.drives import DriveInfo
from provision.wire.erasure import METHODS, Category, ErasePlan, Method, Pattern

__all__ = ["Choice", "choose_method"]


@dataclass(frozen=True)
class Choice:
    """The method for one drive, its NIST category, the pattern the verification looks for, why not a
    stronger method (None when this is the strongest the drive offers) and a note for the record."""

    method: Method
    pattern: Pattern
    fallback: str | None = None
    note: str | None = None
    category: Category = field(init=False)  # from the method (wire.erasure.METHODS)

    def __post_init__(self) -> None:
        object.__setattr__(self, "category", METHODS[self.method])


def _deallocated(reads: str | None) -> Pattern:
    """What an erased block reads as after a block erase: from NVMe's DLFEAT, else either."""
    return "zeros" if reads == "zeros" else "ones" if reads == "ones" else "zeros-or-ones"


def _clear(info: DriveInfo, why: str) -> str:
    """The fallback sentence of an overwrite: why, and what an overwrite does not reach."""
    if info.solid_state:
        return (f"{why}: an overwrite reaches only the visible blocks of this SSD, not its spare area "
                "(NIST Clear, not Purge)")  # fmt: skip
    return f"{why}: one overwrite pass of every visible block (NIST Clear)"


def _hidden_note(info: DriveInfo, overwrite: bool = False) -> str | None:
    hidden = info.hidden
    if hidden.removed:
        return "hidden areas (HPA/DCO) were removed before the erase: they are erased too"
    sectors = (hidden.hpa_sectors or 0) if hidden.hpa else 0
    sectors += (hidden.dco_sectors or 0) if hidden.dco else 0
    if not sectors:
        return None
    reach = ("an overwrite does not reach them" if overwrite
             else "whether the drive's own erase reaches them depends on its firmware")  # fmt: skip
    return f"{sectors} sectors hidden by an HPA/DCO were left in place (erase: hidden_areas: report): {reach}"


def _overwrite(info: DriveInfo, why: str | None) -> Choice:
    return Choice("overwrite", "zeros", _clear(info, why) if why else None, _hidden_note(info, overwrite=True))


def _nvme(info: DriveInfo) -> Choice:
    caps = info.nvme
    if caps is None:
        return _overwrite(info, "the NVMe drive did not answer 'nvme id-ctrl', so its erase commands are unknown")
    reads = _deallocated(caps.deallocated_reads)
    if caps.sanitize_crypto:
        return Choice("nvme-sanitize-crypto", "changed")
    if caps.sanitize_block:
        return Choice("nvme-sanitize-block", reads, "no Sanitize crypto erase on this drive; block erase instead")
    no_sanitize = "the drive has no NVMe Sanitize command"
    if caps.format_crypto:
        return Choice("nvme-format-crypto", "changed", f"{no_sanitize}; Format NVM with crypto erase (SES=2)")
    if caps.format_nvm:
        return Choice("nvme-format-user-data", reads,
                      f"{no_sanitize} and no crypto erase; Format NVM with user data erase (SES=1)")  # fmt: skip
    return _overwrite(info, "the NVMe drive offers neither Sanitize nor Format NVM")


def _ata(plan: ErasePlan, info: DriveInfo) -> Choice:
    ata = info.ata
    assert ata is not None
    if ata.sanitize_crypto:
        return Choice("ata-sanitize-crypto", "changed", note=_hidden_note(info))
    if ata.sanitize_block:
        return Choice("ata-sanitize-block", "zeros-or-ones", "no SANITIZE CRYPTO SCRAMBLE on this drive; "
                      "SANITIZE BLOCK ERASE instead", _hidden_note(info))  # fmt: skip
    if not ata.security_supported:
        return _overwrite(info, "the drive offers no ATA erase command (neither Sanitize nor Security)")
    if ata.count_expired:
        return _overwrite(info, "too many wrong passwords were tried on this drive (ATA security count "
                          "expired): it refuses SECURITY ERASE until it is powered off and on")  # fmt: skip
    if ata.frozen:
        how = ("and could not be unfrozen (the suspend to RAM did not clear it)" if plan.unfreeze
               else "and the recipe does not allow unfreezing it (erase: unfreeze: false)")  # fmt: skip
        why = f"the drive is frozen (the firmware froze its security commands at power-on) {how}"
        if ata.locked:
            why += ("; it is also locked by an ATA password, so it refuses reads and writes: unlock it with its "
                    "password, or set it aside")  # fmt: skip
        return _overwrite(info, why)
    note = _hidden_note(info)
    if ata.locked:
        note = ("the drive is locked by an ATA password: provision's own erase password is tried, which works "
                "only if an earlier erase by provision was interrupted")  # fmt: skip
    fallback = "no SANITIZE feature set on this drive; ATA SECURITY ERASE UNIT instead"
    if ata.enhanced_erase:
        return Choice("ata-security-erase-enhanced", "changed", fallback, note)
    # NIST SP 800-88 Rev. 1, Appendix A: the normal SECURITY ERASE UNIT writes binary 0s or 1s (the vendor's choice)
    return Choice("ata-security-erase", "zeros-or-ones", fallback + " (the drive has no enhanced erase)", note)


def _scsi(info: DriveInfo) -> Choice:
    caps = info.scsi
    if caps is None or not caps.reported:
        return _overwrite(info, "the drive did not list its supported commands, so SANITIZE is unknown")
    if caps.sanitize_crypto:
        return Choice("scsi-sanitize-crypto", "changed")
    if caps.sanitize_block:
        return Choice("scsi-sanitize-block", "zeros-or-ones", "no SANITIZE cryptographic erase; block erase instead")
    if caps.sanitize_overwrite:
        return Choice("scsi-sanitize-overwrite", "zeros", "no SANITIZE crypto or block erase; the drive's own "
                      "overwrite instead (it reaches remapped blocks too)")  # fmt: skip
    return _overwrite(info, "the drive does not support the SCSI SANITIZE command")


_NO_FIRMWARE = {
    "usb": "the drive is behind a USB bridge, which does not pass erase commands faithfully",
    "virtio": "a virtual disk (virtio) has no erase command",
    "mmc": "an eMMC or SD card's erase is not used by provision",
    "unknown": "the drive's interface is unknown, so no erase command is sent to it",
}


def choose_method(plan: ErasePlan, info: DriveInfo) -> Choice:
    """The method for ``info`` under ``plan`` (call it after ``commands.prepare_drive``: unfreezing and hidden
    areas change the answer). ``plan.method == "overwrite"`` always gives the overwrite."""
    if plan.method == "overwrite":
        return _overwrite(info, "the recipe asks for an overwrite (erase: method: overwrite)")
    if info.interface == "nvme":
        return _nvme(info)
    if info.interface == "sata":
        return (
            _ata(plan, info)
            if info.ata is not None
            else _overwrite(info, "the drive did not answer 'hdparm -I', so its erase commands are unknown")
        )
    if info.interface in ("sas", "scsi"):
        return _scsi(info)
    return _overwrite(info, _NO_FIRMWARE.get(info.interface, _NO_FIRMWARE["unknown"]))
