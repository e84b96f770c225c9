"""Boot burst: N simulated PXE clients network-boot at once, against provision and against peer tools.

Every client does the whole chain a BIOS PXE ROM + iPXE does:

1. DHCP DISCOVER -> OFFER -> REQUEST -> ACK (its own MAC and xid, vendor class PXEClient, option 93 = 0,
   broadcast flag), sent from 0.0.0.0 with its own source MAC through a packet socket, answers read on
   one shared UDP socket on port 68 and handed to the client by xid;
2. a TFTP read of ``undionly.kpxe`` (random bytes, ~70 KB) with blksize 1468 and tsize, from the
   ``siaddr`` of the ACK, compared byte for byte;
3. an HTTP GET of ``/boot/<mac>.ipxe`` (rendered per MAC by provision; a static file per MAC for nginx).

Servers (in a :class:`provision.lab.netns.Lab` namespace, bridge ``br0`` 198.18.0.1/24):

- ``provision``: ``python -m provision serve --interface br0 --address 198.18.0.1 --dhcp full``;
- ``baseline``: dnsmasq (DHCP only) + tftpd-hpa (``in.tftpd``) + nginx (static boot scripts).

The clients run in a second namespace joined to ``br0`` by a veth pair (198.18.0.2/24), in a worker
process (``--worker SPEC``: ``python -m bench.burst`` under ``ip netns exec``), one thread per client, all
released at once. Each side runs ``--rounds`` times, alternating. Per run: failures, wall time of the burst, per-client
p50/p95 of each step, retransmissions, and the servers' CPU seconds: from a cgroup the servers start in
(every process, also the exited ones: tftpd-hpa forks one child per transfer and lets the kernel reap it,
so its CPU never shows in ``/proc``) and from ``/proc/PID/stat`` (utime+stime+cutime+cstime of the
server processes and their live children, before/after). Nothing is asserted on time: figures are printed,
then one JSON line.

Run as root: ``sudo scripts/bench`` (installs the peer tools first) or ``.venv/bin/python bench/boot_burst.py``
(a launcher of this package) or ``.venv/bin/python -m bench.burst``.

Modules: :mod:`.common` (addresses, ports, timeouts, errors, running a command), :mod:`.dhcp` (the clients'
DHCP), :mod:`.clients` (TFTP, HTTP, one client, the worker), :mod:`.measure` (CPU, cgroups, UDP drops, killing
by PID), :mod:`.netns` (the clients' namespace), :mod:`.servers` (provision and the baseline), :mod:`.run` (one
burst), :mod:`.report` (table, summary, JSON), :mod:`.cli` (arguments and the run loop).
"""
