"""``python -m bench.agents``: the load benchmark, and the aiohttp baseline's server process it starts."""

import sys

from .cli import main

sys.exit(main())
