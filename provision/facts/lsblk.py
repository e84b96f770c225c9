"""``lsblk --json -b -O`` as facts: the wire's one reader (``provision.wire.probe``, shared with the agent),
tolerant of output that is not lsblk JSON.
"""

from __future__ import annotations

import logging

from provision.wire.probe import Disk, LsblkFormatError, parse_lsblk_strict

log = logging.getLogger(__name__)

__all__ = ["LsblkFormatError", "parse_lsblk", "parse_lsblk_strict"]


def parse_lsblk(text: str) -> tuple[Disk, ...]:
    """Whole disks of ``lsblk --json -b -O`` output; ``()`` (and a logged warning) if it is not lsblk JSON."""
    try:
        return parse_lsblk_strict(text)
    except LsblkFormatError as exc:
        log.warning("lsblk output ignored: %s", exc)
        return ()
