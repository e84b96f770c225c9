"""The mounted part of an in-place update, run in a mount namespace of its own (``inplace.update_root`` starts it
as ``unshare --mount --propagation private -- python -m provision.builder.mounted ...``).

Why a namespace: a process that creates a mount namespace while the root file system is mounted (``ip netns
exec``, a container, a test's lab) gets a copy of that mount; our ``umount`` then leaves the file system alive
there, its last writes unflushed and the loop device attached, and the raw file read for the import misses
them (seen here: a rebuild stored 1 new chunk for 35 MB written). Mounted inside a private namespace, the file
system is visible to no one else, and the kernel unmounts it when the namespace's last process ends, whatever
happens to this one.

Steps: ``mount -t ext4 -o loop,noload,noatime,...,offset=,sizelimit=``, ``rsync`` (its ``--stats`` on stdout),
the root folder owned by 0:0, ``umount`` (always). Exit code: rsync's, else umount's, else 0.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

RSYNC_OPTIONS = ("-aHAX", "--delete", "--checksum", "--inplace", "--numeric-ids", "--exclude=/lost+found", "--stats")
MOUNT_OPTIONS = "loop,noload,noatime,nodev,nosuid,noexec"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m provision.builder.mounted")
    parser.add_argument("--raw", required=True)
    parser.add_argument("--offset", type=int, required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--tree", required=True)
    parser.add_argument("--mountpoint", required=True)
    parser.add_argument("--rsync", default="rsync", help="the rsync program (tests give one that fails)")
    args = parser.parse_args(argv)
    options = f"{MOUNT_OPTIONS},offset={args.offset},sizelimit={args.size}"
    mounted = subprocess.run(["mount", "-t", "ext4", "-o", options, args.raw, args.mountpoint], check=False)
    if mounted.returncode != 0:
        return mounted.returncode
    code = 1
    try:
        sys.stdout.flush()
        code = subprocess.run(
            [args.rsync, *RSYNC_OPTIONS, f"{args.tree}/", f"{args.mountpoint}/"], check=False
        ).returncode
        if code == 0:
            os.chown(args.mountpoint, 0, 0)  # mke2fs -E root_owner=0:0
    finally:
        unmounted = subprocess.run(["umount", args.mountpoint], check=False).returncode
    return code or unmounted


if __name__ == "__main__":
    raise SystemExit(main())
