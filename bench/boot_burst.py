"""Launcher of the boot burst benchmark, the package ``bench/burst/``: ``.venv/bin/python bench/boot_burst.py``."""

import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))  # the repository, so that `bench.burst` imports

from bench.burst.cli import main

if __name__ == "__main__":
    sys.exit(main())
