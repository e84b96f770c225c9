"""The command line, in this process.

- ``run(*argv)``: ``provision <argv>`` through ``provision.cli.main`` with captured output: (exit code, stdout,
  stderr); argparse's exits (--help, usage errors) become their code.
"""

from __future__ import annotations

import io

from provision.cli import main


def run(*argv: str) -> tuple[int, str, str]:
    """``provision <argv>``: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        code = main(list(argv), out=out, err=err)
    except SystemExit as exc:  # argparse exits for --help and usage errors
        code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()
