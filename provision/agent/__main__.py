"""``python3 -m provision.agent``: the live environment's imaging agent (see provision.agent.main).

Server, MAC and token come from the ``provision.*=`` kernel arguments unless given as options. The exit
code tells /init what to do next (0 reboot, 3 power off, others stay up); the last line on stdout is
``PROVISION-AGENT-RESULT <state> <run or -> <reason or ->``.

The PC's screen (``provision.agent.screen``) is drawn on ``--screen`` (default: /dev/tty1 when the kernel
command line names the server, i.e. in the live environment; nowhere otherwise), never on the serial console.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from provision.agent.fetch import RetryPolicy
from provision.agent.inventory import read_kernel_args
from provision.agent.main import EXIT_USAGE, AgentConfig, args_from_kernel, missing, run_agent
from provision.agent.screen import DEFAULT_PATH
from provision.wire.hooks import TARGET_RECORD

RESULT_MARKER = "PROVISION-AGENT-RESULT"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python3 -m provision.agent", description="provision imaging agent")
    parser.add_argument("--server", help="server URL (default: provision.server= kernel argument)")
    parser.add_argument("--mac", help="this machine's boot MAC (default: provision.mac=)")
    parser.add_argument("--token", help="the per-boot token (default: provision.token=)")
    parser.add_argument("--cmdline", type=Path, default=Path("/proc/cmdline"), help="kernel command line file")
    parser.add_argument("--probe-dir", type=Path, help="send this probe folder instead of running the tools")
    parser.add_argument("--disks-from", type=Path, help="files standing in for disks (tests and demos)")
    parser.add_argument("--workers", type=int, default=4, help="chunk requests in flight (default 4)")
    parser.add_argument("--once", action="store_true", help="exit 5 on a 'wait' answer instead of asking again")
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds an API call may keep failing")
    parser.add_argument("--fetch-deadline", type=float, default=300.0, help="seconds a chunk GET may keep failing")
    parser.add_argument("--no-grow", action="store_true", help="never grow the root file system")
    parser.add_argument(
        "--no-firstboot-secret", action="store_true", help="never write the plan's first-boot credential"
    )
    parser.add_argument("--buffered", action="store_true", help="no O_DIRECT on block devices")
    parser.add_argument(
        "--screen",
        type=Path,
        help=f"the console the PC's screen is drawn on (default: {DEFAULT_PATH} in the live environment)",
    )
    parser.add_argument("--no-screen", action="store_true", help="draw no screen")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def screen_path(args: argparse.Namespace, cmdline: str) -> Path | None:
    """Where the screen is drawn: ``--screen``; else /dev/tty1 when the kernel command line names the server
    (the live environment), else nowhere (a test or a demo on a workstation keeps its own terminals)."""
    if args.no_screen:
        return None
    if args.screen is not None:
        return Path(args.screen)
    return DEFAULT_PATH if read_kernel_args(cmdline).get("server") else None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s agent %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        cmdline = args.cmdline.read_text(errors="replace")
    except OSError:
        cmdline = ""
    values = args_from_kernel(cmdline, {"server": args.server, "mac": args.mac, "token": args.token})
    absent = missing(values)
    if absent:
        print(f"{RESULT_MARKER} usage - no {', '.join(absent)} (kernel arguments provision.{absent[0]}=...)")
        return EXIT_USAGE
    grow = None
    if not args.no_grow:
        from provision.agent.grow import grow_root

        grow = grow_root
    cfg = AgentConfig(
        server=values["server"], mac=values["mac"].lower(), token=values["token"], probe_dir=args.probe_dir,
        disks_from=args.disks_from, workers=args.workers, once=args.once, hello_deadline=args.deadline,
        retry=RetryPolicy(deadline=args.fetch_deadline), direct=False if args.buffered else None,
        target_record=Path(TARGET_RECORD), screen=screen_path(args, cmdline),
    )  # fmt: skip
    seed = None
    if not args.no_firstboot_secret:
        from provision.agent.seed import write_firstboot_secret

        seed = write_firstboot_secret
    outcome = run_agent(cfg, grow=grow, seed=seed)
    reason = " ".join((outcome.reason or "-").split())
    print(f"{RESULT_MARKER} {outcome.state} {outcome.run or '-'} {reason}", flush=True)
    return outcome.code


if __name__ == "__main__":
    sys.exit(main())
