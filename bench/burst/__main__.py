"""``python -m bench.burst``: the benchmark, and the client worker (``--worker SPEC``) it runs in a namespace."""

import sys

from .cli import main

sys.exit(main())
