"""Erasure: seconds and MB/s of the agent's overwrite pass (NIST Clear) and of its read-back, beside the tools
a workshop would otherwise use on the same drive in the same run.

The "drive" is a loop device over a file in the work folder when run as root (the path of a real disk: O_DIRECT
writes and reads from the medium), else the file itself. Before every round it is filled with a non-zero
pattern (outside the timing). Then, each timed apart, alternating for ``--rounds`` rounds:

- ``provision overwrite``: ``agent.erasure.overwrite.overwrite`` (4 MiB zero buffers, O_DIRECT, fsync);
- ``dd``: ``dd if=/dev/zero of=DRIVE bs=4M oflag=direct conv=notrunc,fsync`` (what a technician types);
- ``shred -n 0 -z``: coreutils' one pass of zeros (``--force``, fsync'd by shred itself);
- ``provision read-back (full)``: ``agent.erasure.verify.check(full_blocks, "zeros")``: every byte read back;
- ``cmp /dev/zero``: ``cmp -n SIZE DRIVE /dev/zero`` (the shell way to check a zeroed drive; through the page
  cache, so the drive's cache is dropped first: ``BLKFLSBUF`` / ``posix_fadvise(DONTNEED)``);
- ``provision read-back (5 % sample)``: the default ``verify: sample`` (first and last 16 MiB + 1 MiB pieces).

Nothing is asserted: the figures (median and best) and the ratios provision / peer are printed, then one
JSON line.

    .venv/bin/python bench/erase.py [--size 2G] [--rounds 3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file from a fresh clone

from provision.agent.erasure.drive_io import forget_cached
from provision.agent.erasure.overwrite import overwrite
from provision.agent.erasure.verify import check, full_blocks, sample_blocks

MiB = 1 << 20
PATTERN = (b"DONOR-DATA " * 400)[:4096]


def size_arg(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


@contextmanager
def drive(workdir: Path, size: int) -> Iterator[Path]:
    """A loop device over a file of ``size`` bytes (as root), else the file."""
    backing = workdir / "drive.raw"
    with backing.open("wb") as f:
        f.truncate(size)
    if os.geteuid() != 0 or not shutil.which("losetup"):
        yield backing
        return
    device = subprocess.run(
        ["losetup", "--find", "--show", "--direct-io=on", str(backing)], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        yield Path(device)
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


def fill(path: Path, size: int) -> None:
    """The donor's data: a non-zero pattern over every byte, on the medium (fsync), the cache dropped."""
    block = PATTERN * (4 * MiB // len(PATTERN))
    fd = os.open(path, os.O_WRONLY)
    try:
        for offset in range(0, size, len(block)):
            os.pwrite(fd, block[: min(len(block), size - offset)], offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    drop_cache(path)


def drop_cache(path: Path) -> None:
    forget_cached(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def timed(action: Callable[[], object]) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def run_tool(argv: list[str]) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=size_arg, default=size_arg("2G"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    missing = [t for t in ("dd", "shred", "cmp") if not shutil.which(t)]
    if missing:
        print(f"erase bench: missing {', '.join(missing)}", file=sys.stderr)
        return 2
    size = args.size // (4 * MiB) * (4 * MiB)
    workdir = Path(tempfile.mkdtemp(prefix="bench-erase-", dir=args.workdir))
    times: dict[str, list[float]] = {}
    try:
        with drive(workdir, size) as path:
            print(f"drive: {path} ({size / MiB:.0f} MiB){' over a loop device' if path.is_block_device() else ''}")
            writers: dict[str, Callable[[], object]] = {
                "provision overwrite": lambda: overwrite(path),
                "dd oflag=direct": lambda: run_tool(["dd", "if=/dev/zero", f"of={path}", "bs=4M",
                                                     f"count={size // (4 * MiB)}", "oflag=direct",
                                                     "conv=notrunc,fsync", "status=none"]),
                "shred -n 0 -z": lambda: run_tool(["shred", "--force", "-n", "0", "-z", str(path)]),
            }  # fmt: skip
            readers: dict[str, Callable[[], object]] = {
                "provision read-back (full)": lambda: check(path, full_blocks(size), "zeros", method="full"),
                "cmp /dev/zero": lambda: run_tool(["cmp", "-n", str(size), str(path), "/dev/zero"]),
                "provision read-back (5 % sample)": lambda: check(path, sample_blocks(size, 5.0, "bench"), "zeros"),
            }
            for _ in range(args.rounds):
                for name, write in writers.items():
                    fill(path, size)
                    times.setdefault(name, []).append(timed(write))
                    if name != "provision overwrite":
                        continue
                    for reader, read in readers.items():  # each reader after our own overwrite, from the medium
                        drop_cache(path)
                        times.setdefault(reader, []).append(timed(read))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    medians = {name: statistics.median(found) for name, found in times.items()}
    print(f"{'step':34} {'median s':>9} {'best s':>8} {'MB/s':>7}")
    for name, found in times.items():
        print(f"{name:34} {medians[name]:9.2f} {min(found):8.2f} {size / medians[name] / 1e6:7.0f}")
    ratios = {
        "overwrite vs dd": medians["dd oflag=direct"] / medians["provision overwrite"],
        "overwrite vs shred": medians["shred -n 0 -z"] / medians["provision overwrite"],
        "full read-back vs cmp": medians["cmp /dev/zero"] / medians["provision read-back (full)"],
    }
    for name, ratio in ratios.items():
        print(f"{name}: {ratio:.2f}x (peer time / provision time; above 1: provision is faster)")
    print(json.dumps({"size": size, "rounds": args.rounds, "median_s": medians, "ratios": ratios}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
