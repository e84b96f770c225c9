"""`provision hooks check|list|run`: the post-install hooks a server knows (the built-in ones and a site folder),
and one hook run again by hand on a PC in its live environment.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, TextIO

from provision.cli.common import DEFAULT_STATE, EXIT_FAILED, Parser, UsageError, dump
from provision.cli.machines import printable
from provision.errors import ConfigError, FatalError
from provision.hooks import Catalog, HookFile, Param, builtin_dir, check_folders, load_catalog


def folders(site: str | None) -> list[Path]:
    """The built-in folder, and ``site`` unless it is the built-in folder itself."""
    builtin = builtin_dir()
    if site is None or Path(site).resolve() == builtin.resolve():
        return [builtin]
    return [builtin, Path(site)]


def site_catalog(site: str | None) -> Catalog:
    """The catalog of the built-in hooks and ``site``'s (ConfigError with every problem)."""
    return load_catalog(folders(site))


def _param(name: str, param: Param) -> str:
    if param.required:
        return f"{name}: {param.type.value} (required)"
    if param.default is not None:
        return f"{name}: {param.type.value} = {json.dumps(param.default, ensure_ascii=False)}"
    return f"{name}: {param.type.value}"


def _row(hook: HookFile) -> str:
    h = hook.header
    return f"  {h.name:<14} {h.where.value:<7} {h.on_failure.value:<5} {h.timeout:>6}s  {h.description}\n"


def cmd_hooks_check(args: argparse.Namespace, out: TextIO) -> int:
    catalog, problems = check_folders(folders(args.dir))
    if problems:
        raise ConfigError(problems)
    out.write(f"{len(catalog.hooks)} hooks OK in {', '.join(catalog.folders)}\n")
    out.write(f"  {'name':<14} {'where':<7} {'fail?':<5} {'timeout':>7}  description\n")
    for hook in catalog.hooks:
        out.write(_row(hook))
    return 0


def _as_dict(hook: HookFile) -> dict[str, Any]:
    return {"file": str(hook.path), **hook.header.model_dump(mode="json")}


def cmd_hooks_list(args: argparse.Namespace, out: TextIO) -> int:
    catalog = site_catalog(args.dir)
    if args.json:
        dump([_as_dict(h) for h in catalog.hooks], out)
        return 0
    for i, hook in enumerate(catalog.hooks):
        h = hook.header
        if i:
            out.write("\n")
        out.write(f"{h.name}  ({h.where.value}, on_failure {h.on_failure.value}, timeout {h.timeout} s)  {hook.path}\n")
        out.write(f"  {h.description}\n")
        for name, param in h.params.items():
            note = f"  {param.description}" if param.description else ""
            out.write(f"  param {_param(name, param)}{note}\n")
        if h.needs:
            out.write(f"  needs {', '.join(h.needs)}\n")
    return 0


def _given(pairs: list[str]) -> list[tuple[str, str]]:
    given = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--param {pair!r}: expected NAME=VALUE")
        given.append((key, value))
    return given


def cmd_hooks_run(args: argparse.Namespace, out: TextIO) -> int:
    from provision.bundles.repo import KEY_ASC
    from provision.config import load_config
    from provision.macaddr import BadMac, normalize_mac
    from provision.postinstall import PostInstall, describe
    from provision.store import Store

    try:
        mac = normalize_mac(args.mac)
    except BadMac as exc:
        raise UsageError(str(exc)) from None
    given = _given(args.param or [])
    if args.config:
        config = load_config(Path(args.config))
    else:
        config = load_config(None, {"state_dir": args.state_dir or str(DEFAULT_STATE)})
    state = config.state_dir
    db = state / "provision.db"
    if not db.is_file():
        raise FatalError(f"no server database at {db} (has provision serve run with this state directory?)")
    hook_folders = folders(None if config.hooks.dir is None else str(config.hooks.dir))
    with Store(db) as store:
        post = PostInstall(store, lambda: load_catalog(hook_folders), config.ssh_key_path, workers=1,
                           repo_key=config.repo_path / KEY_ASC,
                           port=config.hooks.ssh_port, state_dir=state)  # fmt: skip
        try:
            run, record = post.rerun(mac, args.hook, given)
        finally:
            post.close()
    if args.json:
        dump({"mac": mac, **record.to_dict()}, out)
    else:
        exit_code = "-" if record.exit_code is None else record.exit_code
        out.write(f"hook {record.name} on {mac}: {printable(describe(record))} (exit code {exit_code}, "
                  f"{record.seconds:.1f} s); kept with run {run.id}\n")  # fmt: skip
        if record.output:
            out.write(f"--- output ({record.output_bytes} bytes) ---\n{printable(record.output, lines=True)}")
            out.write("" if record.output.endswith("\n") else "\n")
    return 0 if record.ok else EXIT_FAILED


def add_commands(sub: Any) -> None:
    hooks = sub.add_parser("hooks", help="check and list the post-install hooks")
    hsub = hooks.add_subparsers(dest="hooks_command", metavar="SUBCOMMAND", parser_class=Parser, required=True)
    p = hsub.add_parser(
        "check",
        help="validate the hook headers",
        description="Validate the header of every hook of the built-in folder and of DIR (a site's hooks); print "
        "FILE:LINE: key: message for each problem and exit 1 if any, else list the hooks.",
    )
    p.add_argument("dir", nargs="?", metavar="DIR", help="a site's hook folder, checked with the built-in hooks")
    p.set_defaults(func=cmd_hooks_check)
    p = hsub.add_parser(
        "list",
        help="list the hooks with their parameters",
        description="List every hook (built-in, and DIR's): where it runs, on_failure, timeout, parameters.",
    )
    p.add_argument("dir", nargs="?", metavar="DIR", help="a site's hook folder")
    p.add_argument("--json", action="store_true", help="the headers as JSON")
    p.set_defaults(func=cmd_hooks_list)
    p = hsub.add_parser(
        "run",
        help="run one hook again on a PC in its live environment",
        description="Run HOOK again on the PC with MAC, in the live environment its newest run's hello reported "
        "(its address, its pinned SSH host key), with the parameters that run's plan gave the hook and the "
        "--param values on top; the result is kept with the run (the run's state does not change) and printed. "
        "Exit 0 when the hook succeeded, 1 otherwise.",
    )
    p.add_argument("mac", metavar="MAC", help="the machine's MAC address")
    p.add_argument("hook", metavar="HOOK", help="the hook's name (provision hooks list)")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="a parameter's value (text, converted to its type; a list parameter takes one item per "
                   "--param); may be repeated")  # fmt: skip
    where = p.add_mutually_exclusive_group()
    where.add_argument("--state-dir", metavar="DIR", help=f"the server's state directory (default: {DEFAULT_STATE}; "
                       "then the built-in hooks only and SSH port 22)")  # fmt: skip
    where.add_argument("--config", metavar="FILE", help="the server's YAML configuration (state_dir, hooks.dir, "
                       "hooks.ssh_port)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="the result as JSON")
    p.set_defaults(func=cmd_hooks_run)
