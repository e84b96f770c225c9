"""The `provision` command line: the only module that prints.

Errors print ``provision: error: ...`` and exit 1 (the operation failed) or 2 (the command was misused);
tracebacks only with ``--debug``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from provision import __version__
from provision.errors import ConfigError, ProvisionError
from provision.facts import Facts, load_facts_json, load_probe
from provision.facts.derive import FACT_DOCS, derive
from provision.recipes import Decision, check_dir, load_dir, select
from provision.recipes.conditions import show

log = logging.getLogger("provision")

EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """The command line itself is wrong (exit 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"provision: error: {message}\n")


def default_recipes_dir() -> Path:
    """recipes/ of the source tree when run from it, else ./recipes."""
    here = Path(__file__).resolve().parent.parent / "recipes"
    return here if here.is_dir() else Path("recipes")


def _mac(text: str) -> str:
    mac = text.strip().lower().replace("-", ":")
    if not re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", mac):
        raise argparse.ArgumentTypeError(f"{text!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    return mac


def _load_facts(source: Path) -> Facts:
    if source.is_file() and source.suffix == ".json":
        return load_facts_json(source)
    return load_probe(source)


def _dump(data: Any, out: TextIO) -> None:
    json.dump(data, out, indent=2, sort_keys=False, ensure_ascii=False)
    out.write("\n")


# ---------------------------------------------------------------------------------------------- facts
def cmd_facts(args: argparse.Namespace, out: TextIO) -> int:
    facts = _load_facts(Path(args.probe))
    derived = derive(facts)
    if args.json:
        _dump({"facts": derived, "probe": facts.to_dict()}, out)
        return 0
    width = max(len(d.name) for d in FACT_DOCS)
    out.write(f"# {args.probe}  (read: {', '.join(facts.sources) or 'nothing'})\n")
    for doc in FACT_DOCS:
        out.write(f"{doc.name:<{width}}  {show(derived[doc.name])}\n")
    for warning in facts.warnings:
        out.write(f"warning: {warning}\n")
    return 0


# -------------------------------------------------------------------------------------------- recipes
def cmd_recipes_check(args: argparse.Namespace, out: TextIO) -> int:
    directory = Path(args.dir) if args.dir else default_recipes_dir()
    recipes, problems = check_dir(directory)
    if problems:
        raise ConfigError(problems)
    default = recipes.default.name if recipes.default else "none"
    out.write(f"{directory}: {len(recipes.recipes)} recipes OK (default: {default})\n")
    for rec in sorted(recipes.recipes, key=lambda r: (r.recipe.default, -r.specificity, -r.recipe.priority, r.name)):
        r = rec.recipe
        what = r.image if r.action.value == "image" else r.action.value
        out.write(
            f"  {r.name:<28} {what or '':<12} conditions={rec.specificity} priority={r.priority}"
            f"{'  (default)' if r.default else ''}\n"
        )
    return 0


def _write_decision(decision: Decision, source: str, out: TextIO) -> None:
    out.write(f"machine:  {source}\n")
    f = decision.facts
    out.write(
        f"          {show(f['vendor'])} / {show(f['model'])} / {show(f['form_factor'])}, "
        f"RAM {show(f['ram_mb'])} MiB, UEFI-capable {show(f['uefi_capable'])}, firmware {show(f['firmware'])}\n"
    )
    name = decision.recipe.name if decision.recipe else "none"
    where = f" ({decision.recipe.file})" if decision.recipe else ""
    out.write(f"decision: {decision.action.value.upper()}  recipe {name}{where}\n")
    if decision.via_default:
        out.write("          no specific recipe matched: the default recipe applies\n")
    for reason in decision.reasons:
        out.write(f"  reason: {reason}\n")
    if decision.chosen and decision.chosen.outcomes:
        out.write("why:\n")
        for outcome in decision.chosen.outcomes:
            out.write(f"  {outcome.describe()}\n")
    if decision.health_checks:
        out.write("health:\n")
        for check in decision.health_checks:
            out.write(f"  {check}\n")
    if decision.plan:
        p = decision.plan
        out.write(f"plan:     image {p.image}, wipe {p.wipe}, disk {p.target_disk}, hostname {p.hostname}\n")
        for hook in p.hooks:
            out.write(f"          hook {hook['name']} {json.dumps(hook['params'], ensure_ascii=False)}\n")
    if decision.runners_up:
        out.write("runners-up (also match, ranked lower):\n")
        for cand in decision.runners_up:
            out.write(
                f"  {cand.recipe.name} (conditions={cand.recipe.specificity}, priority={cand.recipe.recipe.priority})\n"
            )
    if decision.rejected:
        out.write("not matching:\n")
        for cand in decision.rejected:
            failed = [o for o in cand.outcomes if not o.matched]
            out.write(f"  {cand.recipe.name}: {failed[0].describe() if failed else ''}\n")


def cmd_recipes_explain(args: argparse.Namespace, out: TextIO) -> int:
    recipes = load_dir(Path(args.recipes) if args.recipes else default_recipes_dir())
    results = []
    for source in args.probe:
        facts = _load_facts(Path(source))
        if facts.mac is None and args.mac:
            facts = dataclasses.replace(facts, mac=args.mac)
        decision = select(recipes, derive(facts))
        results.append((source, decision))
    if args.json:
        payload = [{"source": s, **d.to_dict()} for s, d in results]
        _dump(payload[0] if len(payload) == 1 else payload, out)
    elif args.brief:
        for source, d in results:
            f = d.facts
            name = d.recipe.name if d.recipe else "-"
            out.write(f"{d.action.value:<7} {name:<28} {show(f['vendor'])} {show(f['model'])}  [{source}]\n")
    else:
        for i, (source, decision) in enumerate(results):
            if i:
                out.write("\n")
            _write_decision(decision, source, out)
    return 0


# ---------------------------------------------------------------------------------------------- serve
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
        while not task.done() and server.bound.http == 0:
            await asyncio.sleep(0.02)
        if not task.done():
            b = server.bound
            out.write(
                f"provision: serving {config.address} (interface {config.interface or 'any'}): "
                f"http {b.http}, tftp {b.tftp}, dhcp {config.dhcp.mode.value}"
                f"{f' {b.dhcp}/{b.proxy}' if b.dhcp else ''}; state {config.state_dir}\n"
            )
            out.flush()
            if args.ready_file:
                Path(args.ready_file).write_text(
                    json.dumps({"http": b.http, "tftp": b.tftp, "dhcp": b.dhcp, "proxy": b.proxy, "pid": os.getpid()})
                )
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


# ------------------------------------------------------------------------------------------------ lab
def cmd_lab_demo(args: argparse.Namespace, out: TextIO) -> int:
    import shutil
    import tempfile

    from provision.bootfiles import DEFAULT_CACHE
    from provision.lab import LabError
    from provision.lab.demo import result_table, run_demo, summary_line

    def progress(line: str) -> None:
        out.write(f"{line}\n")
        out.flush()

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="provision-demo-"))
    try:
        result = run_demo(
            workdir,
            pcs=args.pcs,
            cache_dir=Path(args.cache or DEFAULT_CACHE),
            progress=progress,
            keep_running=args.keep_running,
        )
    except BaseException:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    out.write("\n" + "\n".join(result_table(result)) + "\n")
    for problem in result.server_problems:
        out.write(f"server log: {problem}\n")
    out.write(summary_line(result) + "\n")
    if not result.ok:
        logs = [f"{r.pc.name} serial log {r.serial_log}" for r in result.pcs if not r.called_back]
        raise LabError("; ".join(result.failures()) + f" (files kept in {workdir}: {', '.join(logs)})")
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _demo_pcs(text: str) -> Any:
    from provision.lab.demo import parse_pcs

    try:
        return parse_pcs(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_lab_commands(sub: Any) -> None:
    lab = sub.add_parser("lab", help="QEMU PCs network-booting from provision in a private network namespace")
    lsub = lab.add_subparsers(dest="lab_command", metavar="SUBCOMMAND", parser_class=_Parser, required=True)
    p = lsub.add_parser(
        "demo",
        help="provision serve and a QEMU rack booting to the live environment's callback (root)",
        description="Start provision serve (full DHCP) in a private network namespace and network-boot QEMU PCs "
        "from it at once (SeaBIOS + iPXE ROM, OVMF with Secure Boot, ...), each through DHCP, boot file, iPXE "
        "script or GRUB config, kernel and the live environment's callback; then show the machines as the "
        "server sees them. Needs root, qemu-system-x86, ovmf; the boot files come from Debian packages.",
    )
    p.add_argument(
        "--pcs",
        type=_demo_pcs,
        default="bios,uefi-secureboot",
        metavar="KIND,...",
        help="PCs to boot: bios, uefi, uefi-secureboot (default: bios,uefi-secureboot)",
    )
    p.add_argument("--keep-running", action="store_true", help="keep provision serving afterwards until Ctrl-C")
    p.add_argument("--cache", metavar="DIR", help=".deb cache of the boot files (default /var/cache/provision/debs)")
    p.add_argument("--workdir", metavar="DIR", help="keep the boot root and logs here (default: a temporary folder)")
    p.set_defaults(func=cmd_lab_demo)


# ---------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="provision",
        description="Network-boot disk-imaging and provisioning server for refurbishing workshops.",
        epilog="Run 'provision COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"provision {__version__}")
    parser.add_argument("--debug", action="store_true", help="debug logging, and tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser(
        "facts",
        help="show the hardware facts read from a probe folder",
        description="Parse a probe folder (dmidecode.txt, lspci.txt, lsblk.json, meminfo, cpuinfo, "
        "smartctl*.json|txt, firmware, mac) and show the facts recipes match on.",
    )
    p.add_argument("probe", metavar="PROBE_DIR", help="folder holding the probe outputs")
    p.add_argument("--json", action="store_true", help="print the derived facts and the full probe as JSON")
    p.set_defaults(func=cmd_facts)

    rec = sub.add_parser("recipes", help="check recipes, explain which recipe a machine gets")
    rsub = rec.add_subparsers(dest="recipes_command", metavar="SUBCOMMAND", parser_class=_Parser, required=True)
    p = rsub.add_parser(
        "check",
        help="validate a recipe folder",
        description="Validate every recipe; print FILE:LINE: key: message for each problem and exit 1 if any.",
    )
    p.add_argument("dir", nargs="?", metavar="DIR", help="recipe folder (default: recipes/)")
    p.set_defaults(func=cmd_recipes_check)
    p = rsub.add_parser(
        "explain",
        help="show the recipe chosen for a machine, and why",
        description="Choose the recipe for each machine: the conditions that matched, the health gate, the "
        "rendered plan, and the runners-up.",
    )
    p.add_argument("probe", nargs="+", metavar="PROBE_DIR|FACTS.json", help="probe folder or facts JSON")
    p.add_argument("--recipes", metavar="DIR", help="recipe folder (default: recipes/)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--brief", action="store_true", help="one line per machine: action, recipe, model")
    p.add_argument(
        "--mac",
        type=_mac,
        help="MAC address to assume for a probe that has none (the server knows it from DHCP)",
    )
    p.set_defaults(func=cmd_recipes_explain)

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
    _add_lab_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO if args.command == "serve" else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=err,
    )
    func: Callable[[argparse.Namespace, TextIO], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(out)
        return EXIT_USAGE
    try:
        return func(args, out)
    except ConfigError as exc:
        for problem in exc.problems:
            err.write(f"{problem}\n")
        err.write(f"provision: error: {len(exc.problems)} problem(s) found\n")
        if args.debug:
            raise
        return EXIT_FAILED
    except BrokenPipeError:  # `provision ... | head`: the reader left, nothing more to say
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (ProvisionError, OSError) as exc:
        if args.debug:
            raise
        err.write(f"provision: error: {exc}\n")
        return EXIT_FAILED
    except UsageError as exc:
        err.write(f"provision: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        err.write("provision: interrupted\n")
        return 130
