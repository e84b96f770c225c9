"""``smartctl -j -a DEV`` -> the wire's ``Smart`` summary for the erasure record (standard library only).

Only what ``Smart`` holds: the drive's own verdict (``smart_status.passed``), power-on hours, ATA attributes 5
(reallocated sectors) and 197 (pending sectors) as their ``raw.value``, and the NVMe health log's media
errors and percentage used. The server's own parser (``provision.facts.smart``) reads much more, but the
agent may not import it (layers); this one stays small. Bad or empty text gives ``Smart()`` (all unknown).
"""

from __future__ import annotations

import json
from typing import Any

from provision.wire.erasure import Smart

__all__ = ["parse_smart"]

_REALLOCATED, _PENDING = 5, 197


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _attributes(data: dict[str, Any]) -> dict[int, int | None]:
    found: dict[int, int | None] = {}
    table = _dict(data.get("ata_smart_attributes")).get("table")
    for row in table if isinstance(table, list) else []:
        ident = _count(_dict(row).get("id"))
        if ident is not None and ident not in found:
            found[ident] = _count(_dict(_dict(row).get("raw")).get("value"))
    return found


def parse_smart(text: str) -> Smart:
    """smartctl's JSON text -> ``Smart`` (fields it does not report stay None)."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError):
        return Smart()
    if not isinstance(data, dict):
        return Smart()
    status = _dict(data.get("smart_status")).get("passed")
    nvme = _dict(data.get("nvme_smart_health_information_log"))
    attributes = _attributes(data)
    hours = _count(_dict(data.get("power_on_time")).get("hours"))
    return Smart(
        passed=status if isinstance(status, bool) else None,
        power_on_hours=hours if hours is not None else _count(nvme.get("power_on_hours")),
        reallocated=attributes.get(_REALLOCATED),
        pending=attributes.get(_PENDING),
        media_errors=_count(nvme.get("media_errors")),
        percentage_used=_count(nvme.get("percentage_used")),
    )
