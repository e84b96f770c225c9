"""Boot burst: N simulated PXE clients network-boot at once, against provision and against peer tools.

Arguments, the checks before a run, and the run loop (rounds, alternating sides); see the package docstring.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .clients import worker_main
from .common import BOOT_FILE, FILE_SIZE, SIDES, BenchError
from .netns import ClientNetns, cleanup_stale_client_namespaces
from .report import _s, print_report
from .run import RunResult, run_once
from .servers import Servers, make_files


def preflight() -> bool:
    """BenchError when a required tool is missing; True when nginx is there (else no HTTP step in the baseline)."""
    if os.geteuid() != 0:
        raise BenchError("run as root (network namespaces, port 67/69, packet sockets): sudo scripts/bench")
    missing = [tool for tool in ("ip", "ss", "bridge", "sysctl", "dnsmasq", "in.tftpd") if shutil.which(tool) is None]
    if missing:
        raise BenchError(f"missing: {', '.join(missing)} (scripts/bench installs dnsmasq-base, tftpd-hpa and nginx)")
    return shutil.which("nginx") is not None


def orchestrate(args: argparse.Namespace) -> int:
    from provision.lab.netns import Lab

    has_nginx = preflight()
    cleanup_stale_client_namespaces()
    workdir = Path(tempfile.mkdtemp(prefix="boot-burst-"))
    workdir.chmod(0o755)  # nginx's worker (nobody) reads www/ under it
    keep = args.keep
    runs: list[RunResult] = []
    try:
        files = make_files(workdir, args.clients, args.file_size)
        with Lab(workdir=workdir / "lab") as lab:
            cns = ClientNetns(lab.name, lab.bridge)
            try:
                cns.start()
                servers = Servers(lab, files, nginx=has_nginx)
                for rnd in range(1, args.rounds + 1):
                    for side in SIDES:
                        result = run_once(lab, servers, cns, files, side, rnd, workdir)
                        runs.append(result)
                        print(
                            f"round {rnd} {side:<9}: {result.failures} failures, wall {result.wall_s:.2f} s, "
                            f"server CPU {_s(result.cpu_s)} s",
                            file=sys.stderr,
                            flush=True,
                        )
            finally:
                cns.close()
    except BaseException:
        keep = True
        raise
    finally:
        if keep:
            print(f"boot_burst: files and logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print_report(args.clients, args.rounds, args.file_size, runs, has_nginx)
    return 1 if any(r.failures for r in runs) else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=50, help="simulated PXE clients per burst (default 50)")
    parser.add_argument("--rounds", type=int, default=3, help="bursts per side, alternating (default 3)")
    parser.add_argument("--file-size", type=int, default=FILE_SIZE, help=f"size of {BOOT_FILE} (default {FILE_SIZE})")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, configs, leases)")
    parser.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(Path(args.worker))
    if not 1 <= args.clients <= 150:
        parser.error("--clients must be 1..150 (the DHCP range holds 151 addresses)")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    try:
        return orchestrate(args)
    except BenchError as exc:
        print(f"boot_burst: error: {exc}", file=sys.stderr)
        return 2
