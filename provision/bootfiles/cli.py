"""The command line: ``python -m provision.bootfiles DEST`` (``scripts/fetch-boot-files``)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from provision.bootfiles.debcache import DEFAULT_CACHE, IPXE_SUITE, LISTS_MAX_AGE, DebCache
from provision.bootfiles.errors import AptFailed, BootFilesError
from provision.bootfiles.root import install_boot_root

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fetch-boot-files", description="Fetch boot files from Debian packages and lay out a boot root."
    )
    parser.add_argument("dest", type=Path, help="boot root to create or update (TFTP/HTTP root)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help=f"default {DEFAULT_CACHE}")
    parser.add_argument("--refresh", action="store_true", help="refresh the apt lists even if recent")
    parser.add_argument("--ipxe-suite", default=IPXE_SUITE, help=f"suite to take iPXE from (default {IPXE_SUITE})")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        cache = DebCache(
            args.cache_dir, ipxe_suite=args.ipxe_suite, lists_max_age=0.0 if args.refresh else LISTS_MAX_AGE
        )
        install_boot_root(args.dest, cache=cache)
    except (BootFilesError, AptFailed) as exc:
        log.error("fetch-boot-files: %s", exc)
        return 1
    return 0
