"""The agent's side of the rack multicast carousel (issue 16; the contract: ``provision.wire.carousel``).

- ``receiver``: the socket (the group joined on the interface to the server, 4 MiB buffer, kernel drops);
- ``reassembly``: pieces -> whole frames (``Ready``) or frames in part to repair by HTTP Range (``Repair``),
  bounded memory, loss and pass accounting;
- ``listen``: the listening loop and its reasons to leave, the keepalive timer;
- ``loads``: decode + sha256 check of what came, range repair, HTTP fallback, byte counts;
- ``source``: ``MulticastSource``, the writer's chunk source when the plan has ``multicast``.

Only the source of the chunks differs from unicast: the writer decodes and checks every chunk before it is
written, writes it at every offset of its sha256, and verifies the whole disk after, as for unicast.
"""

from provision.agent.multicast.listen import Timeouts
from provision.agent.multicast.reassembly import Limits
from provision.agent.multicast.source import MulticastSource, UdpReceiver

__all__ = ["Limits", "MulticastSource", "Timeouts", "UdpReceiver"]
