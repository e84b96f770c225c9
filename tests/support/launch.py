"""``python -m tests.support.launch [--busy-timeout SECONDS] ARGS...``: the ``provision`` command line (``ARGS``)
with the state store's SQLite busy timeout set first (``provision.store.base.BUSY_TIMEOUT``), so a fault test
can hold the store's lock longer than the server waits for it without waiting 30 s (tests/support/faults.py,
tests/functional/test_fault_state.py).
"""

from __future__ import annotations

import sys

from provision import cli
from provision.store import base


def main(argv: list[str]) -> int:
    if argv[:1] == ["--busy-timeout"]:
        base.BUSY_TIMEOUT = float(argv[1])
        argv = argv[2:]
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
