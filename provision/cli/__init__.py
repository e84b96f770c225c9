"""The `provision` command line: the only package that prints.

One module per command group (facts and recipes, hooks, bundles, serve, images, lab, users); this module builds the
parser and runs a command. Errors print ``provision: error: ...`` and exit 1 (the operation failed) or 2 (the command
was misused); tracebacks only with ``--debug``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from provision import __version__
from provision.cli import (
    backup,
    bundles,
    certificates,
    config,
    facts,
    hooks,
    images,
    lab,
    live,
    machines,
    report,
    serve,
    users,
)
from provision.cli.common import EXIT_FAILED, EXIT_USAGE, Parser, UsageError
from provision.errors import ConfigError, ProvisionError
from provision.logcontext import configure as configure_logging

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="provision",
        description="Network-boot disk-imaging and provisioning server for refurbishing workshops.",
        epilog="Run 'provision COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"provision {__version__}")
    parser.add_argument("--debug", action="store_true", help="debug logging, and tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in (
        facts,
        hooks,
        bundles,
        serve,
        config,
        images,
        lab,
        machines,
        live,
        users,
        certificates,
        report,
        backup,
    ):
        module.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(
        logging.DEBUG if args.debug else logging.INFO if args.command == "serve" else logging.WARNING,
        err,
        getattr(args, "log_format", None),  # serve's --log-format; else journal under systemd, text elsewhere
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
