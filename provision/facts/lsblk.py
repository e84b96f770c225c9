"""``lsblk --json -b -O`` as facts: the wire's one reader (``provision.wire.probe``, shared with the agent),
tolerant of output that is not lsblk JSON.

The wire reader takes a number of more than 19 digits or outside 64 bits as unknown; the facts side also
makes numbers outside the facts' range (provision.facts.model.MAX_FACT_INT) unknown.
"""

from __future__ import annotations

import dataclasses
import logging

from provision.facts.model import fact_int
from provision.wire.probe import Disk, LsblkFormatError
from provision.wire.probe import parse_lsblk_strict as _wire_parse_lsblk_strict

log = logging.getLogger(__name__)

__all__ = ["LsblkFormatError", "parse_lsblk", "parse_lsblk_strict"]


def parse_lsblk_strict(text: str) -> tuple[Disk, ...]:
    """Whole disks of ``lsblk --json -b -O`` output; LsblkFormatError when the text is not lsblk JSON."""
    disks = _wire_parse_lsblk_strict(text)
    return tuple(
        dataclasses.replace(
            disk,
            size_bytes=fact_int(disk.size_bytes),
            logical_sector=fact_int(disk.logical_sector),
            physical_sector=fact_int(disk.physical_sector),
        )
        for disk in disks
    )


def parse_lsblk(text: str) -> tuple[Disk, ...]:
    """Whole disks of ``lsblk --json -b -O`` output; ``()`` (and a logged warning) if it is not lsblk JSON."""
    try:
        return parse_lsblk_strict(text)
    except LsblkFormatError as exc:
        log.warning("lsblk output ignored: %s", exc)
        return ()
