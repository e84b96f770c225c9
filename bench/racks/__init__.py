"""Rack: N agents image the same image at once in network namespaces behind tbf-shaped links, by HTTP unicast,
by the multicast carousel and by udpcast, in the same run: the time until all are verified and time(N)/time(1).

A switch namespace with a bridge, the server's namespace and one per agent (198.18.0.0/24; every link, the
server's too, shaped with tbf at ``--rate``, 100 Mbit/s by default, both ways). A synthetic disk
(``bench/image_import.py``'s: GPT + ext4 holding real /usr files, ``--content`` of them) is imported into a
store; for each N and transport a fresh ``provision serve`` (its own state, ``multicast.transfer`` the
transport's, the carousel paced at 90 % of the link) runs in the server's namespace and N real agents
(``python -m provision.agent``: a hello with the sample probe of a QEMU PC, then write + verify + report onto
a file standing in for the disk) start at once, one per namespace. udpcast: ``udp-sender --nokbd`` of the
exported ``disk.img.zst`` (paced like the carousel) to N ``udp-receiver``s writing files, compared with the
export's sha256. Printed: per N and transport the seconds to the last verified, t(N)/t(1), aggregate MB/s
(N x the bytes each one gets / seconds), the server's CPU (provision serve's, udp-sender's) and the packets
each link's qdisc dropped (server out/in, agents in/out).

The agents (and udp-receivers) run at ``--agent-nice`` (5): on a rack each PC has its own CPU, here N agents
share the 2 cores with the server, and at the same niceness their start (N Python processes at once) took the
carousel's sender off its pace. ``--agent-nice 0`` measures them at the server's priority. For the same reason
each agent's Python is started and has imported the agent before its clock starts (``warmstart.py``: about
0.3 s of CPU each, which N PCs spend side by side but N agents here one after another on 2 cores); ``--cold``
starts each one when its clock starts.

Scenarios (``--scenarios``, multicast, at ``--scenario-agents`` N): ``late``: the last agent starts at 30 %
of the baseline's time (it should finish about one carousel pass after joining, the others unchanged);
``slow``: the last agent's link at a tenth of the rate (the others unchanged, it falls back to HTTP);
``kill``: the last agent killed mid-way (the others unchanged); ``loss``: ``--loss`` (5 %) netem loss on
``--loss-on`` links (all verified; repair bytes from the runs' TransferReport, the API's run records).

Nothing is asserted; the figures are printed, then one JSON line. Needs root; every namespace and process is
removed (by name and PID) at the end, on Ctrl-C too, and a killed run's leftovers at the next start.

    sudo scripts/bench rack [--agents 1,4,8] [--max 12] [--rate 50mbit] [--scenarios late,slow,kill,loss]
"""
