"""`provision hooks check|list`: the post-install hooks a server knows (the built-in ones and a site folder).

(`provision hooks run MAC HOOK` needs the server's SSH side and comes with it.)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, TextIO

from provision.cli.common import Parser, dump
from provision.errors import ConfigError
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
