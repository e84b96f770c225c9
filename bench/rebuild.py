"""Nightly rebuilds: new chunks and bytes of an in-place rebuild beside a fresh one of the same inputs, and times.

One run (root: mmdebstrap for Debian images, loop devices and mount for in-place rebuilds):

1. ``A``: the image (``--image``, default educ-light) built fresh into a new store, with one more overlay,
   ``overlay/bench``, holding ``payload.bin`` (``--payload-mib``, 16 MiB of seeded random bytes).
2. The store is copied (hard links: stored files are never changed in place) so each mode starts from A.
3. ``B`` = A + one package (``--add``, default lincity-ng: ~58 MiB installed, a leaf game with its data): built
   in place into the first store (from A's disk), and fresh (``--fresh``) into the copy: the baseline.
4. ``C`` = B with ``payload.bin`` rewritten (same size, other bytes: an upgraded package's files change
   that way; the definitions cannot pin a package version, so the change is made in an overlay): again in
   place from B-in-place, and fresh into the copy.

For each of B and C: new chunks stored (not held by any version of that store before) and their bytes
(plain and zstd), beside the size of the change (rsync's "Total transferred file size" of the in-place
update: the bytes of every file whose content differs, generated files included) and the goal (new chunks
<= change / 4 MiB + 10, and <= 5 % of the image's stored chunks); the time of the whole build and of its
disk steps (partition to finish: where the two modes differ), in place against fresh. Nothing is asserted:
figures are printed, then one JSON line. Everything is built under ``--workdir`` (removed unless ``--keep``).

    sudo .venv/bin/python bench/rebuild.py [--image educ-light|debian-mini|tiny] [--add PACKAGE]
                                           [--payload-mib 16] [--workdir DIR] [--keep] [--reuse]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from provision.bootfiles import DebCache
from provision.builder import BuildResult, build_image
from provision.builder.progress import known_chunks
from provision.images.store import ImageStore

REPO = Path(__file__).resolve().parents[1]
DISK_STEPS = ("previous", "partition", "filesystems", "bootloader-bios", "bootloader-uefi", "finish")
MiB = 1 << 20
DEFAULT_ADD = {"educ-light": "lincity-ng", "educ": "lincity-ng", "debian-mini": "python3", "tiny": "hello"}


def write_payload(folder: Path, mib: int, seed: int) -> int:
    path = folder / "overlay" / "bench" / "opt" / "bench" / "payload.bin"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(seed).randbytes(mib * MiB))  # nosec B311 - test data
    return mib * MiB


def write_definition(folder: Path, image: str, add: str | None) -> Path:
    """images/IMAGE.yaml with the bench overlay (and the added package) into ``folder``."""
    spec = yaml.safe_load((REPO / "images" / f"{image}.yaml").read_text())
    spec["overlays"] = [*spec.get("overlays", []), "overlay/bench"]
    if add is not None:
        if spec["builder"] == "tiny":
            spec["extra_debs"] = [*spec.get("extra_debs", []), add]
        else:
            spec["packages"] = {**spec["packages"], "bench": [add]}
    path = folder / f"{image}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    return path


def new_chunk_bytes(store: ImageStore, result: BuildResult, before: set[str]) -> tuple[int, int]:
    """Plain and stored (zstd) bytes of the chunks this build added to the store."""
    plain = stored = 0
    for sha, length in result.version.index.unique_chunks().items():
        if sha not in before:
            plain += length
            stored += store.chunks.path(sha).stat().st_size
    return plain, stored


def run_build(definition: Path, store: ImageStore, cache: DebCache, work: Path, *, fresh: bool) -> dict[str, Any]:
    before = known_chunks(store)
    started = time.monotonic()
    result = build_image(
        definition, store, cache=cache, workdir=work / "build", log_dir=work / "logs", fresh=fresh
    )  # fmt: skip
    seconds = time.monotonic() - started
    plain, stored = new_chunk_bytes(store, result, before)
    rsync = result.in_place.get("rsync", {}) if isinstance(result.in_place, dict) else {}
    change = str(rsync.get("Total transferred file size", "")).replace(",", "").split(" ")[0]
    return {
        "mode": result.mode,
        "reason": result.mode_reason,
        "new_chunks": result.chunks.new,
        "stored_chunks": result.chunks.stored,
        "total_chunks": result.chunks.total,
        "new_plain_bytes": plain,
        "new_stored_bytes": stored,
        "change_bytes": int(change) if change.isdigit() else None,
        "seconds": round(seconds, 1),
        "disk_seconds": round(sum(v for k, v in result.step_seconds.items() if k in DISK_STEPS), 1),
        "steps": result.step_seconds,
        "log": str(result.log),
    }


def goal(in_place: dict[str, Any]) -> dict[str, Any]:
    change = in_place["change_bytes"] or 0
    by_change = change // (4 * MiB) + 10
    by_share = in_place["stored_chunks"] * 5 // 100
    return {
        "limit_by_change": by_change,
        "limit_5_percent": by_share,
        "met": in_place["new_chunks"] <= by_change and in_place["new_chunks"] <= by_share,
    }


def show(name: str, what: str, in_place: dict[str, Any], fresh: dict[str, Any]) -> None:
    change = in_place["change_bytes"] or 0
    g = goal(in_place)
    print(f"\n{name}: {what}; change {change / MiB:.1f} MiB (rsync: bytes of the files that differ)")
    if in_place["mode"] != "in_place":
        print(f"  the in-place build was not in place: {in_place['reason']}")
    print(f"  {'':9} {'new chunks':>14} {'new MiB':>9} {'new zstd MiB':>13} {'build s':>8} {'disk steps s':>13}")
    for label, r in (("in place", in_place), ("fresh", fresh)):
        print(
            f"  {label:9} {r['new_chunks']:>5} of {r['stored_chunks']:>5} {r['new_plain_bytes'] / MiB:>9.1f} "
            f"{r['new_stored_bytes'] / MiB:>13.1f} {r['seconds']:>8.1f} {r['disk_seconds']:>13.1f}"
        )
    ratio = in_place["new_chunks"] / fresh["new_chunks"] if fresh["new_chunks"] else 0.0
    print(
        f"  in place / fresh: new chunks {ratio:.3f}, build time {in_place['seconds'] / fresh['seconds']:.2f}, "
        f"disk steps {in_place['disk_seconds'] / max(fresh['disk_seconds'], 0.1):.2f}"
    )
    print(
        f"  goal: new chunks <= {g['limit_by_change']} (change / 4 MiB + 10) and <= {g['limit_5_percent']} "
        f"(5 % of {in_place['stored_chunks']}): {'met' if g['met'] else 'NOT met'}"
    )
    print(f"  in place: {in_place['reason']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--image", default="educ-light", help="definition of images/ (default educ-light)")
    parser.add_argument("--add", help="package added for B (default: lincity-ng; debian-mini: python3; tiny: hello)")
    parser.add_argument("--payload-mib", type=int, default=16, help="size of the overlay file changed for C")
    parser.add_argument("--workdir", type=Path, help="work folder (default: a new one under /var/tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (stores, logs)")
    parser.add_argument("--reuse", action="store_true", help="start from A of a kept --workdir (not built again)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench rebuild: needs root (mmdebstrap, loop devices, mount)", file=sys.stderr)
        return 2
    add = args.add or DEFAULT_ADD.get(args.image, "hello")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-rebuild-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    cache = DebCache()
    defs = work / "images"
    try:
        shutil.copytree(REPO / "images" / "overlay", defs / "overlay", dirs_exist_ok=True)
        write_payload(defs, args.payload_mib, seed=1)
        store = ImageStore(work / "store-in-place")
        start = store.current(args.image) if args.reuse else None
        if start is None:
            print(f"A: {args.image} fresh (the starting version) ...", flush=True)
            first = run_build(write_definition(defs, args.image, None), store, cache, work, fresh=False)
        else:
            write_definition(defs, args.image, None)
            ix = start.index
            first = {"reused": start.ref, "stored_chunks": len(ix.unique_chunks()), "total_chunks": len(ix.chunks)}
            first["seconds"] = ix.provenance.get("build_seconds")
        print(f"A: {first['stored_chunks']} stored chunks of {first['total_chunks']}, {first['seconds']} s")
        shutil.rmtree(work / "store-fresh", ignore_errors=True)
        shutil.copytree(work / "store-in-place", work / "store-fresh", copy_function=os.link)
        baseline = ImageStore(work / "store-fresh")
        with_package = write_definition(defs, args.image, add)
        print(f"B: + {add}, in place and fresh ...", flush=True)
        b_in = run_build(with_package, store, cache, work, fresh=False)
        b_fresh = run_build(with_package, baseline, cache, work, fresh=True)
        write_payload(defs, args.payload_mib, seed=2)
        print(f"C: {args.payload_mib} MiB overlay file rewritten, in place and fresh ...", flush=True)
        c_in = run_build(with_package, store, cache, work, fresh=False)
        c_fresh = run_build(with_package, baseline, cache, work, fresh=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    show("B", f"A + package {add}", b_in, b_fresh)
    show("C", f"B with {args.payload_mib} MiB of an overlay file rewritten", c_in, c_fresh)
    figures = {
        "image": args.image,
        "add": add,
        "payload_mib": args.payload_mib,
        "A": first,
        "B": {"in_place": b_in, "fresh": b_fresh, "goal": goal(b_in)},
        "C": {"in_place": c_in, "fresh": c_fresh, "goal": goal(c_in)},
    }
    print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
