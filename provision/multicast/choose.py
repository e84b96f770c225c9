"""The transfer decision at hello, and the carousel a multicast plan names.

- The mode: the recipe's ``transfer``, else the config's ``multicast.transfer``. ``auto`` is multicast when
  ``multicast.min_agents`` or more runs want the same version digest at once (the new run counted, with the
  runs not ended that started in the last ``multicast.recent_minutes``), else unicast. The runs planned before
  the threshold keep their HTTP plan: a rack of 40 gets 2 unicast runs and 38 multicast ones.
- The group: one address of ``multicast.group`` per version, chosen from its digest (the same after a
  restart, on every server with the same config, with no table to keep). Two versions may share a group: a
  datagram names its version (``digest16``), and a receiver drops another version's.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from provision.config import MulticastConfig, TransferMode
from provision.wire.carousel import MulticastPlan


@dataclass(frozen=True)
class Choice:
    """How a run's chunks come, and why (logged at hello)."""

    multicast: bool
    why: str


def choose(recipe_transfer: str | None, config: MulticastConfig, wanting: int) -> Choice:
    """The mode for a new run: ``wanting`` is how many runs want its version, itself included."""
    mode = TransferMode(recipe_transfer) if recipe_transfer is not None else config.transfer
    said = "the recipe" if recipe_transfer is not None else "the config"
    if mode is TransferMode.MULTICAST:
        return Choice(True, f"{said} says multicast")
    if mode is TransferMode.UNICAST:
        return Choice(False, f"{said} says unicast")
    if wanting >= config.min_agents:
        return Choice(True, f"auto: {wanting} runs want this version (multicast from {config.min_agents})")
    return Choice(False, f"auto: {wanting} run(s) want this version (multicast from {config.min_agents})")


def group_for(digest: str, network: ipaddress.IPv4Network) -> str:
    """The version's group: an address of ``network`` picked by the digest's first 8 bytes."""
    offset = int(digest[:16], 16) % network.num_addresses
    return str(network.network_address + offset)


def plan_for(digest: str, chunks: int, config: MulticastConfig) -> MulticastPlan:
    """The plan's ``multicast`` for a version whose carousel has ``chunks`` chunks (one pass)."""
    return MulticastPlan(
        group=group_for(digest, config.group),
        port=config.port,
        digest=digest,
        chunks=chunks,
        rate=config.rate,
        keepalive=config.keepalive_seconds,
        max_loss=config.max_loss,
    )
