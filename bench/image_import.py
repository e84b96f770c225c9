"""Image import: MB/s and stored size of ``ImageStore.import_raw`` beside ``zstd -3 -T0`` on the same raw disk.

The disk (made once per run in the work folder): a sparse file of ``--disk-size`` (2 GiB) with a GPT and one
Linux partition from 1 MiB to the end, holding an ext4 filesystem made by ``mkfs.ext4 -E offset=1048576 -d DIR``
from a folder of real files (copies of /usr/share, /usr/lib/python3*, /usr/lib/x86_64-linux-gnu until
``--content`` bytes, ~1 GiB). ``-d`` fills the filesystem without mounting, so no root or loop device is needed.
A whole-disk filesystem without a partition table would be refused by the import (not a disk).

Then, in the same run and on the same page-cache-warm file:

- ``import``: ``import_raw`` into an empty store (chunking, sha256, zstd -3 in a thread pool, atomic writes
  with fsync, the bmap ranges and the sha256 of the whole source);
- ``reimport``: the same disk again (every chunk already stored: the cost of a nightly rebuild that changed
  nothing, minus the build);
- ``verify`` and ``export`` of that version;
- ``zstd -3 -T0`` of the raw file (what an operator would do by hand), and ``zstd -d`` of its output.

Each is run ``--rounds`` times (the figure is the best). MB/s is disk bytes (2 GiB, holes included) per second.
Nothing is asserted: figures are printed, then one JSON line. Needs ``mkfs.ext4`` (e2fsprogs) and ``zstd``.

    .venv/bin/python bench/image_import.py [--disk-size 2G] [--content 1G] [--chunk-size 4M] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from provision.builder.layout import NewPartition, write_gpt
from provision.images import ImageStore, ImageVersion

SOURCES = ["/usr/share", *sorted(str(p) for p in Path("/usr/lib").glob("python3*")), "/usr/lib/x86_64-linux-gnu"]
OFFSET = 1 << 20


def size_arg(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1:] in units else int(text)


def walk_files(roots: list[str]) -> Iterator[Path]:
    for root in roots:
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(files):
                path = Path(folder, name)
                if path.is_file() and not path.is_symlink():
                    yield path


def fill_content(dest: Path, budget: int) -> tuple[int, int]:
    """Copy real files into ``dest`` until ``budget`` bytes. Returns (files, bytes)."""
    files = total = 0
    for src in walk_files(SOURCES):
        try:
            size = src.stat().st_size
            if total + size > budget:
                continue
            target = dest / src.relative_to("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
        except OSError:
            continue  # unreadable or vanished: skip
        files += 1
        total += size
        if total >= budget * 0.99:
            break
    return files, total


def make_disk(work: Path, disk_size: int, content: int) -> tuple[Path, dict[str, Any]]:
    raw = work / "disk.img"
    if raw.exists():
        return raw, json.loads((work / "disk.json").read_text())
    tree = work / "content"
    started = time.monotonic()
    files, total = fill_content(tree, content)
    with raw.open("w+b") as f:
        table = write_gpt(f, disk_size, [NewPartition(0, name="root")], seed=1)
    part = table.partitions[0]
    fs_kib = part.size * 512 // 4096 * 4
    argv = ["mkfs.ext4", "-F", "-q", "-E", f"offset={OFFSET}", "-d", str(tree), "-L", "root", str(raw), f"{fs_kib}k"]
    subprocess.run(argv, check=True)
    shutil.rmtree(tree)
    info = {"files": files, "content_bytes": total, "allocated_bytes": raw.stat().st_blocks * 512,
            "made_in_s": round(time.monotonic() - started, 1)}  # fmt: skip
    (work / "disk.json").write_text(json.dumps(info))
    return raw, info


def cpu_seconds() -> float:
    """CPU time (user + system) of this process's threads and of its waited-for children (zstd)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(run: Callable[[], Any]) -> tuple[tuple[float, float], Any]:
    """((wall seconds, CPU seconds), result). CPU seconds hardly change with the machine's load."""
    started, cpu = time.perf_counter(), cpu_seconds()
    result = run()
    return (time.perf_counter() - started, cpu_seconds() - cpu), result


def stats(times: list[tuple[float, float]], mb: float) -> dict[str, float]:
    walls = [t[0] for t in times]
    return {"s": min(walls), "median_s": statistics.median(walls), "MB/s": mb / min(walls), "runs": len(times),
            "cpu_s": statistics.median(t[1] for t in times)}  # fmt: skip


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--disk-size", type=size_arg, default=2 << 30)
    parser.add_argument("--content", type=size_arg, default=1 << 30)
    parser.add_argument("--chunk-size", type=size_arg, default=4 << 20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the disk here and reuse it next time")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    for tool in ("mkfs.ext4", "zstd"):
        if shutil.which(tool) is None:
            print(f"image_import: {tool} is missing", file=sys.stderr)
            return 2
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-image-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return run(args, work)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> int:
    raw, disk = make_disk(work, args.disk_size, args.content)
    size = raw.stat().st_size
    mb = size / 1e6
    subprocess.run(["cat", str(raw)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache for both sides
    figures: dict[str, Any] = {"disk": {"size": size, **disk}, "cpus": os.cpu_count(), "chunk_size": args.chunk_size}
    out = work / "disk.img.zst"
    zstd = ["zstd", "-3", "-T0", "-q", "-f", str(raw), "-o", str(out)]

    def fresh_import() -> tuple[ImageStore, ImageVersion]:
        shutil.rmtree(work / "store", ignore_errors=True)
        store = ImageStore(work / "store")
        return store, store.import_raw(raw, "bench", chunk_size=args.chunk_size)

    imports: list[tuple[float, float]] = []
    zstds: list[tuple[float, float]] = []
    for _ in range(args.rounds):  # alternate, so a busy moment of the machine hits both sides alike
        timing, (store, version) = timed(fresh_import)
        imports.append(timing)
        zstds.append(timed(lambda: subprocess.run(zstd, check=True))[0])
    stored = tree_bytes(store.chunks.root)
    ix = version.index
    figures["import"] = {**stats(imports, mb), "stored_bytes": stored, "chunks": len(ix.chunks), "holes": ix.holes,
                         "index_bytes": store.index_path("bench", version.digest).stat().st_size,
                         "distinct_chunks": len(ix.unique_chunks())}  # fmt: skip
    figures["zstd -3 -T0"] = {**stats(zstds, mb), "stored_bytes": out.stat().st_size}
    again = [timed(lambda: store.import_raw(raw, "bench", chunk_size=args.chunk_size))[0] for _ in range(args.rounds)]
    figures["reimport"] = stats(again, mb)
    timing, report = timed(lambda: store.verify("bench"))
    figures["verify"] = {**stats([timing], mb), "ok": report.ok}
    timing, (zst, _) = timed(lambda: store.export("bench", work / "export"))
    figures["export"] = {**stats([timing], mb), "zst_bytes": zst.stat().st_size}
    timing, _ = timed(lambda: subprocess.run(["zstd", "-d", "-q", "-f", str(out), "-o", os.devnull], check=True))
    figures["zstd -d"] = stats([timing], mb)
    report_figures(figures)
    print(json.dumps(figures, sort_keys=True))
    return 0


def report_figures(f: dict[str, Any]) -> None:
    d = f["disk"]
    content = f"ext4 with {d['files']} files ({d['content_bytes'] / 2**20:.0f} MiB)"
    print(f"disk: {d['size'] / 2**30:.2f} GiB raw, {content}, {d['allocated_bytes'] / 2**20:.0f} MiB allocated; "
          f"{f['cpus']} CPUs; chunk {f['chunk_size'] >> 20} MiB")  # fmt: skip
    imp, z = f["import"], f["zstd -3 -T0"]
    rows = [
        ("import_raw", imp, imp["stored_bytes"]),
        ("zstd -3 -T0", z, z["stored_bytes"]),
        ("import_raw again (dedup)", f["reimport"], 0),
        ("verify", f["verify"], None),
        ("export (.zst + .bmap)", f["export"], f["export"]["zst_bytes"]),
        ("zstd -d", f["zstd -d"], None),
    ]
    print(f"{'':26} {'best':>8} {'median':>8} {'MB/s':>8} {'CPU':>8} {'stored':>12}")
    for name, row, stored in rows:
        shown = "" if stored is None else f"{stored / 2**20:9.1f} MiB"
        print(f"{name:26} {row['s']:7.2f}s {row['median_s']:7.2f}s {row['MB/s']:8.0f} {row['cpu_s']:7.2f}s {shown:>12}")
    print(f"ratios: import time / zstd time = {imp['s'] / z['s']:.2f} (CPU {imp['cpu_s'] / z['cpu_s']:.2f}); "
          f"stored / zstd output = "
          f"{imp['stored_bytes'] / z['stored_bytes']:.3f}; raw / stored = {d['size'] / imp['stored_bytes']:.1f}; "
          f"index {imp['index_bytes']} bytes, {imp['chunks']} chunks, {imp['holes']} holes, "
          f"{imp['distinct_chunks']} distinct")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
