"""Agent load: N simulated PCs loop the real agent protocol through the real API of ``provision serve`` for a
while, then the store is checked against what they were promised; the same load on baselines, same run.

``provision serve`` runs as its own process on 127.0.0.1 (HTTP, TFTP and the DHCP proxy on port 0, a ready
file) with an image store holding one small image and a default recipe. The agents (asyncio tasks with
aiohttp clients, in the bench's process) each image one PC after another: boot script (token), hello with
a real probe, the index, progress every ~2 s of simulated writing, the final report, the next boot (local
disk). A few writes fail or lose power on purpose, and such a PC's next boot network-boots first (a PXE
DHCPDISCOVER) to earn a new token, as the token rules require (docs/api.md).

Measured per side: requests per second, p50/p95/p99/max latency and errors by status per kind of request;
the server's CPU (utime+stime from ``/proc/PID/stat`` over the load), RSS (start, end, peak), threads and
descriptors; the client's CPU and event-loop lag. Then, provision stopped, its SQLite store is read with
``provision.store.Store``: events sent = events stored, runs created vs ended, verification records =
reports, no run left open, every done machine done. Baselines: a minimal aiohttp app with the same routes
(always) and nginx with fixed answers (when installed). Nothing is asserted on time; the exit status is 1
when the store does not match or provision answered an error.

    .venv/bin/python -m bench.agents [--agents 100] [--seconds 600] [--quick] [--json] [--keep]

Modules: :mod:`.fixture` (image, recipe, server process, netboot), :mod:`.agent` (the simulated PCs),
:mod:`.ledger` (what they were promised), :mod:`.metrics` (latency, /proc, loop lag), :mod:`.baseline`
(aiohttp and nginx), :mod:`.consistency` (the store against the ledger), :mod:`.report`, :mod:`.cli`.
"""
