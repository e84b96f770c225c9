"""Launcher of the agent load benchmark, the package ``bench/agents/``: ``.venv/bin/python bench/agent_load.py``."""

import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))  # the repository, so that `bench.agents` imports

from bench.agents.cli import main

if __name__ == "__main__":
    sys.exit(main())
