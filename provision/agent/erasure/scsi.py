"""What ``sg3_utils`` says of a SCSI/SAS drive, as typed values: pure functions of text (standard library only).

``parse_opcodes``: ``sg_opcodes DEV`` (REPORT SUPPORTED OPERATION CODES) -> ``ScsiCaps``: whether SANITIZE
(opcode 0x48) is supported and with which service actions (1 overwrite, 2 block erase, 3 cryptographic
erase). sg_opcodes prints one row per command: ``Opcode  Service Action  Name``, e.g.
``48        1         Sanitize, overwrite``. A drive that does not answer REPORT SUPPORTED OPERATION CODES
(many older disks) gives ``ScsiCaps(reported=False)``: SANITIZE unknown, so not used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SANITIZE_OPCODE", "ScsiCaps", "parse_opcodes"]

SANITIZE_OPCODE = 0x48
OVERWRITE, BLOCK_ERASE, CRYPTO_ERASE = 1, 2, 3
_ROW = re.compile(r"^\s*([0-9a-fA-F]{2})\s+([0-9a-fA-F]{1,2})?\s+(\S.*?)\s*$")


@dataclass(frozen=True)
class ScsiCaps:
    """SANITIZE support of a SCSI/SAS drive. ``reported``: the drive listed its supported commands at all."""

    reported: bool = False
    sanitize_overwrite: bool = False
    sanitize_block: bool = False
    sanitize_crypto: bool = False

    @property
    def sanitize(self) -> bool:
        return self.sanitize_overwrite or self.sanitize_block or self.sanitize_crypto


def parse_opcodes(text: str) -> ScsiCaps:
    """``sg_opcodes`` text -> ``ScsiCaps``; no command table in it -> ``ScsiCaps(reported=False)``."""
    actions: set[int] = set()
    rows = 0
    for line in (text or "").splitlines():
        row = _ROW.match(line)
        if not row:
            continue
        rows += 1
        name = row.group(3).lower()
        if int(row.group(1), 16) != SANITIZE_OPCODE or "sanitize" not in name:
            continue
        if row.group(2) is not None:
            actions.add(int(row.group(2), 16))
        else:  # some versions print the service action only in the name
            actions |= {a for a, word in ((1, "overwrite"), (2, "block"), (3, "crypt")) if word in name}
    return ScsiCaps(
        reported=rows > 0,
        sanitize_overwrite=OVERWRITE in actions,
        sanitize_block=BLOCK_ERASE in actions,
        sanitize_crypto=CRYPTO_ERASE in actions,
    )
