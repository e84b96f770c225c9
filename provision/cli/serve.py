"""`provision serve` and `provision dhcp-config`."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, TextIO


def _serve_overrides(args: argparse.Namespace) -> dict[str, Any]:
    over: dict[str, Any] = {}
    if args.interface:
        over["interface"] = args.interface
    if args.address:
        over["address"] = args.address
    if args.dhcp:
        over.setdefault("dhcp", {})["mode"] = args.dhcp
    if args.state_dir:
        over["state_dir"] = args.state_dir
    if args.boot_root:
        over["boot_root"] = args.boot_root
    ports = {k: getattr(args, f"{k}_port") for k in ("http", "tftp", "dhcp", "proxy")}
    ports = {k: v for k, v in ports.items() if v is not None}
    if ports:
        over["ports"] = ports
    return over


def cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    import asyncio
    import signal

    from provision.config import load_config
    from provision.server import Server

    config = load_config(Path(args.config) if args.config else None, _serve_overrides(args))
    server = Server(config)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.ensure_future(server.serve(stop))
        ready = asyncio.ensure_future(server.ready.wait())
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if not task.done():
            b = server.bound
            out.write(
                f"provision: serving {config.address} (interface {config.interface or 'any'}): "
                f"http {b.http}, tftp {b.tftp}, dhcp {config.dhcp.mode.value}"
                f"{f' {b.dhcp}/{b.proxy}' if b.dhcp else ''}; state {config.state_dir}\n"
            )
            out.flush()
            if args.ready_file:  # written whole, then renamed: a watcher never reads half of it
                ready_file = Path(args.ready_file)
                partial = ready_file.with_name(f".{ready_file.name}.partial")
                ports = {"http": b.http, "tftp": b.tftp, "dhcp": b.dhcp, "proxy": b.proxy, "pid": os.getpid()}
                partial.write_text(json.dumps(ports))
                partial.replace(ready_file)
        await task

    asyncio.run(run())
    out.write("provision: stopped\n")
    return 0


def cmd_dhcp_config(args: argparse.Namespace, out: TextIO) -> int:
    from provision.config import load_config
    from provision.dhcp import dhcp_config_snippet
    from provision.server import pxe_settings

    over: dict[str, Any] = {"address": args.address} if args.address else {}
    if args.http_port is not None:
        over["ports"] = {"http": args.http_port}
    config = load_config(Path(args.config) if args.config else None, over)
    out.write(dhcp_config_snippet(args.kind, pxe_settings(config, config.ports.http)))
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run DHCP, TFTP and HTTP for the imaging LAN",
        description="Network-boot PCs on the imaging LAN: proxyDHCP (default) or full DHCP on ONE interface, "
        "TFTP for the boot loaders, HTTP for boot scripts, boot files and the agent API. SIGTERM stops all.",
    )
    p.add_argument("--interface", metavar="IF", help="the imaging LAN interface; DHCP answers only there")
    p.add_argument("--address", metavar="IP", help="this server's address on the imaging LAN")
    p.add_argument("--dhcp", choices=["proxy", "full", "off"], help="DHCP mode (default: proxy)")
    p.add_argument("--state-dir", metavar="DIR", help="database and leases (default: /var/lib/provision)")
    p.add_argument("--boot-root", metavar="DIR", help="boot files served by TFTP and HTTP")
    p.add_argument("--config", metavar="FILE", help="YAML configuration (flags override it)")
    for name, default in (("http", 8080), ("tftp", 69), ("dhcp", 67), ("proxy", 4011)):
        p.add_argument(
            f"--{name}-port", type=int, metavar="N", help=f"{name} port (default {default}; 0: any free port)"
        )
    p.add_argument("--ready-file", metavar="FILE", help="write the bound ports as JSON here once serving")
    p.add_argument(
        "--log-format",
        choices=["text", "journal"],
        help="log lines with a time stamp (text), or with a syslog priority prefix and none (journal); default: "
        "journal when systemd runs the server (JOURNAL_STREAM set), else text",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "dhcp-config",
        help="print the DHCP server snippet for sites that keep their own DHCP server",
        description="Print the configuration that makes an existing dnsmasq, ISC dhcpd or Kea server hand "
        "PXE clients the right boot file for provision.",
    )
    p.add_argument("--for", dest="kind", choices=["dnsmasq", "isc", "kea"], required=True)
    p.add_argument("--address", metavar="IP", help="this server's address on the imaging LAN")
    p.add_argument("--http-port", type=int, metavar="N", help="HTTP port of provision serve (default 8080)")
    p.add_argument("--config", metavar="FILE", help="YAML configuration")
    p.set_defaults(func=cmd_dhcp_config)
