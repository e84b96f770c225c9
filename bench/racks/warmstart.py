"""An agent started warm (the rack bench, ``--warm``): Python starts and imports the agent, says it is ready
(creates READY), waits until GO exists, then runs ``python -m provision.agent`` with the arguments after ``--``.

On a rack each PC starts its agent on its own CPU; here N agents share the server's 2 cores, and N Python
start-ups at once (about 0.3 s of CPU each) would be counted in the round's time as if they were one after
another. Run as a script (``python bench/racks/warmstart.py READY GO -- ARGS``): it imports only provision
(from the round's code copy, on PYTHONPATH), never the bench package.
"""

import sys
import time
from pathlib import Path

POLL = 0.005  # seconds between two looks for GO


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[2] != "--":
        print("usage: warmstart.py READY GO -- AGENT-ARGS", file=sys.stderr)
        return 2
    ready, go, rest = Path(argv[0]), Path(argv[1]), argv[3:]
    from provision.agent.__main__ import main as agent_main  # the whole agent: main imports every step it runs

    ready.touch()
    while not go.exists():
        time.sleep(POLL)
    return agent_main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
