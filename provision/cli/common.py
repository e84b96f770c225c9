"""What every command module shares: the argument parser class, exit codes, JSON output."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NoReturn, TextIO

EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """The command line itself is wrong (exit 2)."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"provision: error: {message}\n")


def dump(data: Any, out: TextIO) -> None:
    json.dump(data, out, indent=2, sort_keys=False, ensure_ascii=False)
    out.write("\n")


DEFAULT_STATE = Path("/var/lib/provision")  # the server's state directory when neither option names one


def state_dir_of(args: argparse.Namespace) -> Path:
    """The server's state directory a command works on: ``--state-dir``, else the ``--config`` file's
    ``state_dir``, else DEFAULT_STATE."""
    from provision.config import load_config

    if args.state_dir:
        return Path(args.state_dir)
    if args.config:
        return load_config(Path(args.config)).state_dir
    return DEFAULT_STATE
