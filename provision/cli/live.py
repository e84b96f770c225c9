"""`provision live build`: the live environment (kernel + initramfs with the agent) into the boot root."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TextIO

from provision.cli.common import Parser, dump


def _config(args: argparse.Namespace) -> Any:
    from provision.config import load_config

    overrides: dict[str, Any] = {}
    if args.state_dir:
        overrides["state_dir"] = args.state_dir
    if args.boot_root:
        overrides["boot_root"] = args.boot_root
    return load_config(Path(args.config) if args.config else None, overrides)


def authorized_key(args: argparse.Namespace, state_dir: Path) -> tuple[str, str]:
    """The key line to trust and where it came from: ``--authorized-key FILE`` or the server's own key."""
    from provision.sshkeys import ensure_server_key, parse_public_key

    if args.authorized_key:
        path = Path(args.authorized_key)
        return parse_public_key(path.read_text(encoding="utf-8", errors="replace"), source=str(path)), str(path)
    key = ensure_server_key(state_dir)
    return key.public_line, str(key.public_path)


def cmd_live_build(args: argparse.Namespace, out: TextIO) -> int:
    from provision.bootfiles import DEFAULT_CACHE
    from provision.live import SIZE_GOAL, build_live
    from provision.live.bootstrap import DEFAULT_CACHE as LIVE_CACHE

    config = _config(args)
    dest = Path(args.out) if args.out else config.boot_root / "live"
    key, source = authorized_key(args, config.state_dir)

    def progress(line: str) -> None:
        if not args.json:
            out.write(f"{line}\n")
            out.flush()

    if not args.json:
        out.write(f"live environment -> {dest} (authorized key from {source})\n")
    result = build_live(
        dest,
        key,
        force=args.force,
        deb_cache_dir=Path(args.deb_cache or DEFAULT_CACHE),
        cache_dir=Path(args.cache_dir or LIVE_CACHE),
        level=args.level,
        progress=progress,
    )
    m = result.manifest
    if args.json:
        dump({**m.to_dict(), "out": str(dest), "reused": result.reused}, out)
        return 0
    mib = 2**20
    out.write(
        f"kernel    {m.kernel_release} ({m.kernel_package} {m.kernel_version})\n"
        f"vmlinuz   {m.vmlinuz.size / mib:6.1f} MiB  sha256 {m.vmlinuz.sha256}\n"
        f"initrd    {m.initrd.size / mib:6.1f} MiB  sha256 {m.initrd.sha256}  ({m.compression}, "
        f"{m.initrd_uncompressed / mib:.0f} MiB unpacked)\n"
        f"total     {m.total_size / mib:6.1f} MiB  (goal {SIZE_GOAL / mib:.0f} MiB: "
        f"{'met' if m.within_goal else 'EXCEEDED'})\n"
        f"contents  {len(m.packages)} Debian packages, {len(m.modules)} modules, {len(m.firmware)} firmware files, "
        f"agent {m.agent_sha256[:12]} ({len(m.agent_files)} files)\n"
        f"ssh       trusts {m.authorized_key}\n"
    )
    if result.reused:
        out.write(f"reused    the inputs did not change (that build took {m.build_seconds:.0f} s)\n")
    else:
        out.write(f"built     in {m.build_seconds:.0f} s{' (Debian tree from the cache)' if m.tree_cached else ''}\n")
    return 0


def add_commands(sub: Any) -> None:
    live = sub.add_parser("live", help="the live environment PCs network-boot into to be imaged")
    lsub = live.add_subparsers(dest="live_command", metavar="SUBCOMMAND", parser_class=Parser, required=True)
    p = lsub.add_parser(
        "build",
        help="build vmlinuz + initrd.img + live.json from Debian packages (root)",
        description="Build the live environment: Debian's signed kernel and a zstd initramfs with python3, "
        "the agent, disk and probe tools, busybox and dropbear trusting only the server's SSH key. The Debian "
        "tree is cached (rebuilt when the package versions change); unchanged inputs reuse the output. Needs "
        "root, mmdebstrap and kmod. Default output: the boot root's live/ folder, which provision serve boots.",
    )
    p.add_argument("--out", metavar="DIR", help="output folder (default: BOOT_ROOT/live)")
    p.add_argument("--authorized-key", metavar="FILE", help="the one public key to trust (default: the server's key)")
    p.add_argument("--config", metavar="FILE", help="the server's YAML configuration (state_dir, boot_root)")
    p.add_argument("--state-dir", metavar="DIR", help="the server's state directory (its SSH key is STATE/ssh)")
    p.add_argument("--boot-root", metavar="DIR", help="the server's boot root (default output BOOT_ROOT/live)")
    p.add_argument("--deb-cache", metavar="DIR", help="Debian package cache (default /var/cache/provision/debs)")
    p.add_argument("--cache-dir", metavar="DIR", help="prepared tree cache (default /var/cache/provision/live)")
    p.add_argument("--level", type=int, default=19, choices=range(1, 23), metavar="N", help="zstd level (19)")
    p.add_argument("--force", action="store_true", help="build even when the output is up to date")
    p.add_argument("--json", action="store_true", help="print live.json (plus out, reused) instead of a summary")
    p.set_defaults(func=cmd_live_build)
