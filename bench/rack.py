"""Rack: N agents at once by HTTP unicast, the multicast carousel and udpcast, in namespaces (package bench/racks/).

Run ``sudo .venv/bin/python bench/rack.py --help`` (or ``sudo scripts/bench rack``); the package is not named
bench/rack/ because a module and a package of the same name would be one module for mypy and Python."""

import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))  # the repository, so that `bench.racks` imports

from bench.racks.cli import entry

if __name__ == "__main__":
    sys.exit(entry())
