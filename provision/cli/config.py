"""`provision config check|show|defaults|reference`: the server's configuration file, checked and explained
(docs/configuration.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TextIO

from provision.cli.common import EXIT_FAILED, UsageError

DEFAULT_CONFIG = Path("/etc/provision/provision.yaml")


def _file(args: argparse.Namespace) -> Path:
    return Path(args.file) if args.file else DEFAULT_CONFIG


def cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    from provision.config import check_config

    path = _file(args)
    problems = check_config(path)
    for problem in problems:
        out.write(f"{problem}\n")
    if problems:
        out.write(f"{path}: {len(problems)} problem(s)\n")
        return EXIT_FAILED
    out.write(f"{path}: ok\n")
    return 0


def cmd_show(args: argparse.Namespace, out: TextIO) -> int:
    import yaml

    from provision.config import load_config

    path = Path(args.file) if args.file else DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None
    config = load_config(path)
    out.write(f"# the effective configuration: {path or 'no file'}, then the defaults\n")
    out.write(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True))
    return 0


def cmd_defaults(args: argparse.Namespace, out: TextIO) -> int:
    from provision.cli.configdoc import defaults_yaml

    out.write(defaults_yaml())
    return 0


def cmd_reference(args: argparse.Namespace, out: TextIO) -> int:
    from provision.cli.configdoc import reference, replace_reference

    if not args.write:
        out.write(reference())
        return 0
    path = Path(args.write)
    try:
        text = replace_reference(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UsageError(f"{path}: {exc}") from None
    path.write_text(text, encoding="utf-8")
    out.write(f"{path}: configuration reference written\n")
    return 0


def add_commands(sub: Any) -> None:
    from provision.cli.common import Parser

    config = sub.add_parser("config", help="the server's configuration file: check, show, defaults, reference")
    csub = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND", parser_class=Parser, required=True)
    p = csub.add_parser(
        "check",
        help="check a configuration file: FILE:LINE: key: message for every problem (exit 1), else ok",
        description="Check a configuration file as `provision serve --config` reads it: YAML syntax, duplicate, "
        "unknown and missing keys, wrong types and bad values, each as FILE:LINE: key: message (exit 1).",
    )
    p.add_argument("file", metavar="FILE", nargs="?", help=f"the configuration (default: {DEFAULT_CONFIG})")
    p.set_defaults(func=cmd_check)
    p = csub.add_parser("show", help="the effective configuration (the file, then every default) as YAML")
    p.add_argument("file", metavar="FILE", nargs="?", help=f"the configuration (default: {DEFAULT_CONFIG} if any)")
    p.set_defaults(func=cmd_show)
    p = csub.add_parser("defaults", help="every key with its default and meaning, as a YAML file to start from")
    p.set_defaults(func=cmd_defaults)
    p = csub.add_parser("reference", help="the Markdown table of every key (docs/configuration.md)")
    p.add_argument("--write", metavar="FILE", help="replace the table between the markers in FILE")
    p.set_defaults(func=cmd_reference)
