"""`provision lab demo`: provision serve and a QEMU rack in a private network namespace, imaged end to end."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TextIO

from provision.cli.common import Parser


def cmd_lab_demo(args: argparse.Namespace, out: TextIO) -> int:
    import shutil
    import tempfile

    from provision.bootfiles import DEFAULT_CACHE
    from provision.lab import LabError
    from provision.lab.demo import run_demo
    from provision.lab.report import milestone_table, result_table, summary_line

    def progress(line: str) -> None:
        out.write(f"{line}\n")
        out.flush()

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="provision-demo-"))
    try:
        result = run_demo(
            workdir,
            pcs=args.pcs,
            cache_dir=Path(args.cache or DEFAULT_CACHE),
            progress=progress,
            keep_running=args.keep_running,
            dashboard_port=args.dashboard_port,
        )
    except BaseException:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    out.write("\n" + "\n".join(milestone_table(result)) + "\n")
    out.write("\n" + "\n".join(result_table(result)) + "\n")
    for problem in result.server_problems:
        out.write(f"server log: {problem}\n")
    out.write(summary_line(result) + "\n")
    if not result.ok:
        logs = [f"{r.name} serial logs {', '.join(map(str, r.serial_logs))}" for r in result.pcs if not r.ok]
        raise LabError("; ".join(result.failures()) + f" (files kept in {workdir}: {'; '.join(logs)})")
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _demo_pcs(text: str) -> Any:
    from provision.lab.demorack import parse_pcs

    try:
        return parse_pcs(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_commands(sub: Any) -> None:
    lab = sub.add_parser("lab", help="QEMU PCs network-booting from provision in a private network namespace")
    lsub = lab.add_subparsers(dest="lab_command", metavar="SUBCOMMAND", parser_class=Parser, required=True)
    p = lsub.add_parser(
        "demo",
        help="provision serve and a QEMU rack imaged end to end: live environment, tiny image, own disk (root)",
        description="Prepare the boot root, the live environment and the tiny image, start provision serve (full "
        "DHCP) in a private network namespace and network-boot blank QEMU PCs from it at once (SeaBIOS + iPXE "
        "ROM, OVMF with Secure Boot, ...): each boots the live environment, is imaged with the tiny image "
        "(written, verified, recorded), reboots, network-boots again to 'local disk' and boots the image from "
        "its own disk, whose first-boot callback reaches the server; then show each PC as the server recorded "
        "it. Needs root, qemu-system-x86, ovmf, mmdebstrap; everything else comes from Debian packages.",
    )
    p.add_argument(
        "--pcs",
        type=_demo_pcs,
        default="bios,uefi-secureboot",
        metavar="KIND,...",
        help="PCs to image: bios, uefi, uefi-secureboot, up to 8 (default: bios,uefi-secureboot)",
    )
    p.add_argument("--keep-running", action="store_true", help="keep provision serving afterwards until Ctrl-C")
    p.add_argument("--dashboard-port", type=int, default=0, metavar="PORT",
                   help="this machine's 127.0.0.1 port for the dashboard (default: any free one, printed)")  # fmt: skip
    p.add_argument("--cache", metavar="DIR", help=".deb cache of the boot files (default /var/cache/provision/debs)")
    p.add_argument(
        "--workdir", metavar="DIR", help="keep the boot root, image, logs and disks here (default: a temporary folder)"
    )
    p.set_defaults(func=cmd_lab_demo)
