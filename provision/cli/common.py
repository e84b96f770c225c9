"""What every command module shares: the argument parser class, exit codes, JSON output."""

from __future__ import annotations

import argparse
import json
import sys
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
