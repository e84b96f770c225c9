"""Real file systems for the capture's free-space test (tests/functional/test_capture_freespace.py), made and
checked with their own tools, and a disk holding them partitioned by sfdisk.

- ``make_ext`` (mke2fs with ``lazy_itable_init=1``: BLOCK_UNINIT groups; its free blocks, listed by dumpe2fs,
  filled with random bytes first; files written and some removed again with debugfs), ``make_vfat`` (mkfs.vfat;
  a file filling it copied then deleted with mtools; files copied with mcopy), ``make_ntfs`` (mkntfs; files
  written and some deleted through an ntfs-3g mount, or written with ntfscp when FUSE is not there).
- ``tool_free`` what the tools themselves say is free: dumpe2fs's per-group free block ranges, fsck.vfat's and
  ntfsinfo's free cluster counts; ``check`` asks the tools whether a file system is clean (e2fsck -fn,
  fsck.vfat -n, ntfsfix -n) and reads every file back (debugfs cat, mcopy, ntfscat).
- ``assemble`` writes the file-system images into a disk file partitioned by sfdisk (GPT, or MBR with the last
  one a logical partition) and answers sfdisk's own ``(number, offset, size)`` of each.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
from pathlib import Path

from tests.support.agent import run_tool as run

MiB = 1 << 20
KEEP = {"small": 5000, "big": 3 * MiB + 123, "dir/mid": 300_000, "one": 1}
GONE = {"gone1": 2 * MiB, "gone2": 700_000}  # written, then removed: their blocks are free with data in them


def content(name: str, size: int) -> bytes:
    return random.Random(name).randbytes(size)


def files(tmp: Path) -> dict[str, Path]:
    """The source files (``KEEP`` and ``GONE``) in ``tmp``."""
    out = {}
    for name, size in {**KEEP, **GONE}.items():
        path = tmp / ("src-" + name.replace("/", "-"))
        path.write_bytes(content(name, size))
        out[name] = path
    return out


def make_ext(path: Path, size: int, options: list[str]) -> None:
    path.write_bytes(b"")
    os.truncate(path, size)
    run(["mke2fs", "-q", "-F", "-E", "lazy_itable_init=1", *options, str(path)])
    block = int(_field(run(["dumpe2fs", "-h", str(path)]).stdout, "Block size"))
    with path.open("r+b") as f:
        for first, count in ext_free_blocks(path):
            os.pwrite(f.fileno(), content(f"junk{first}", count * block), first * block)
    src = files(path.parent)
    script = ["mkdir dir", *(f"write {src[n]} {n}" for n in (*GONE, *KEEP)), *(f"rm {n}" for n in GONE)]
    (path.parent / "debugfs.cmd").write_text("\n".join(script) + "\n")
    run(["debugfs", "-w", "-f", str(path.parent / "debugfs.cmd"), str(path)])


def ext_free_blocks(path: Path) -> list[tuple[int, int]]:
    """dumpe2fs's ``Free blocks:`` lines of every group, as merged ``(first block, count)``."""
    runs: list[tuple[int, int]] = []
    for line in run(["dumpe2fs", str(path)]).stdout.splitlines():
        if not line.startswith("  Free blocks: "):  # a group's (the header's has no indent)
            continue
        line = line.strip()
        for item in filter(None, (x.strip() for x in line[len("Free blocks: ") :].split(","))):
            a, _, b = item.partition("-")
            first, last = int(a), int(b or a)
            if runs and sum(runs[-1]) == first:
                runs[-1] = (runs[-1][0], runs[-1][1] + last - first + 1)
            else:
                runs.append((first, last - first + 1))
    return runs


def make_vfat(path: Path, size: int, bits: int) -> None:
    path.write_bytes(b"")
    os.truncate(path, size)
    run(["mkfs.vfat", "-F", str(bits), *(["-s", "1"] if bits == 32 else []), "-n", "ESP", str(path)])
    free, cluster = vfat_free(path)
    filler = path.parent / "filler"
    filler.write_bytes(content("filler", free * cluster))
    img = f"{path}"
    run(["mcopy", "-i", img, str(filler), "::/filler"])
    run(["mdel", "-i", img, "::/filler"])
    src = files(path.parent)
    run(["mmd", "-i", img, "::/dir"])
    for name in (*GONE, *KEEP):
        run(["mcopy", "-i", img, str(src[name]), f"::/{name}"])
    for name in GONE:
        run(["mdel", "-i", img, f"::/{name}"])


def vfat_free(path: Path) -> tuple[int, int]:
    """fsck.vfat's free clusters (its total less its used) and cluster size."""
    out = run(["fsck.vfat", "-n", "-v", str(path)]).stdout
    used, total = (int(x) for x in re.search(r"(\d+)/(\d+) clusters", out).groups())  # type: ignore[union-attr]
    cluster = int(re.search(r"(\d+) bytes per cluster", out).group(1))  # type: ignore[union-attr]
    return total - used, cluster


def make_ntfs(path: Path, size: int) -> str:
    """An NTFS volume with the files; says how they were written."""
    path.write_bytes(b"")
    os.truncate(path, size)
    run(["mkntfs", "-q", "-F", "-f", "-L", "WIN", str(path)])
    src = files(path.parent)
    mnt = path.parent / "mnt"
    mnt.mkdir(exist_ok=True)
    if shutil.which("ntfs-3g") and run(["ntfs-3g", str(path), str(mnt)], check=False).returncode == 0:
        try:
            (mnt / "dir").mkdir()
            for name in (*GONE, *KEEP):
                shutil.copyfile(src[name], mnt / name)
            for name in GONE:
                (mnt / name).unlink()
        finally:
            run(["umount", str(mnt)])
        return "ntfs-3g mount"
    for name in KEEP:  # ntfscp cannot make a directory: dir/mid goes to the root
        run(["ntfscp", str(path), str(src[name]), name.replace("/", "-")])
    return "ntfscp"


def ntfs_free(path: Path) -> int:
    out = run(["ntfsinfo", "-m", str(path)]).stdout
    return int(re.search(r"Free Clusters:\s+(\d+)", out).group(1))  # type: ignore[union-attr]


def check(kind: str, path: Path, how: str = "") -> None:
    """The file system is clean by its own tool, and every kept file reads back as written."""
    if kind.startswith("ext"):
        fsck = run(["e2fsck", "-fn", str(path)], check=False)
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
        for name, size in KEEP.items():
            cat = subprocess.run(["debugfs", "-R", f"cat /{name}", str(path)], capture_output=True, check=True)
            assert cat.stdout == content(name, size), name
    elif kind == "vfat":
        fsck = run(["fsck.vfat", "-n", str(path)], check=False)
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
        for name, size in KEEP.items():
            got = subprocess.run(["mcopy", "-n", "-i", str(path), f"::/{name}", "-"], capture_output=True, check=True)
            assert got.stdout == content(name, size), name
    else:
        fix = run(["ntfsfix", "-n", str(path)], check=False)
        assert fix.returncode == 0, fix.stdout + fix.stderr
        for name, size in KEEP.items():
            stored = name if how == "ntfs-3g mount" else name.replace("/", "-")
            got = subprocess.run(["ntfscat", str(path), stored], capture_output=True, check=True)
            assert got.stdout == content(name, size), name


def assemble(disk: Path, label: str, images: list[Path]) -> list[tuple[int, int, int]]:
    """``images`` as the partitions of ``disk`` (``label`` gpt or dos; with dos the last is a logical one)."""
    sizes = [img.stat().st_size for img in images]
    disk.write_bytes(b"")
    os.truncate(disk, sum(sizes) + (len(images) + 3) * MiB)
    lines = [f"label: {label}"]
    for i, size in enumerate(sizes):
        if label == "dos" and i == len(sizes) - 1 and len(sizes) > 1:
            lines.append("type=5")  # the extended partition: the rest of the disk
        lines.append(f"size={size // 1024}KiB" + (", type=83" if label == "dos" else ""))
    run_input(["sfdisk", "-q", str(disk)], "\n".join(lines) + "\n")
    table = json.loads(run(["sfdisk", "-J", str(disk)]).stdout)["partitiontable"]
    parts = [p for p in table["partitions"] if p.get("type") not in ("5", "f", "85")]
    found = [(int(re.search(r"(\d+)$", p["node"]).group(1)), p["start"] * 512, p["size"] * 512) for p in parts]  # type: ignore[union-attr]
    with disk.open("r+b") as out:
        for (_, offset, size), img, want in zip(found, images, sizes, strict=True):
            assert size == want, (size, want)
            copy_into(img, out.fileno(), offset)
    return found


def copy_into(src: Path, fd: int, offset: int, piece: int = 4 * MiB) -> None:
    """``src`` written at ``offset`` of ``fd``, its all-zero pieces skipped (the files stay sparse)."""
    with src.open("rb") as f:
        for at in range(0, src.stat().st_size, piece):
            data = f.read(piece)
            if data.count(0) != len(data):
                os.pwrite(fd, data, offset + at)


def run_input(argv: list[str], text: str) -> None:
    done = subprocess.run(argv, input=text, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{argv}: {done.stderr}"


def _field(out: str, name: str) -> str:
    return re.search(rf"^{name}:\s+(.+)$", out, re.M).group(1).strip()  # type: ignore[union-attr]
