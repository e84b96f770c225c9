"""`provision image import|list|verify|export|retain` (the store), `image build|rebuild` (the builder), `image diff`
(``imagediff``) and `image capture` (``imagecapture``)."""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from provision.cli import imagecapture, imagediff
from provision.cli.common import DEFAULT_STATE, EXIT_FAILED, Parser, dump, state_dir_of

DEFAULT_STORE = Path("/var/lib/provision/images")


def _store(args: argparse.Namespace) -> Any:
    from provision.config import load_config
    from provision.images import ImageStore

    if args.store:
        return ImageStore(Path(args.store))
    if args.config:
        return ImageStore(load_config(Path(args.config)).images_dir)
    return ImageStore(DEFAULT_STORE)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _bar(out: TextIO, label: str) -> Callable[[int, int], None]:
    """A progress line on a terminal (rewritten in place at most 5 times a second); nothing otherwise."""
    last = [0.0]
    started = time.monotonic()
    tty = out.isatty()

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if not tty or (now - last[0] < 0.2 and done < total):
            return
        last[0] = now
        rate = done / max(now - started, 1e-6)
        pct = 100 * done / total if total else 100
        out.write(f"\r{label}: {pct:5.1f} %  {_size(done)} / {_size(total)}  {_size(rate)}/s ")
        if done >= total:
            out.write("\n")
        out.flush()

    return show


def cmd_import(args: argparse.Namespace, out: TextIO) -> int:
    store = _store(args)
    started = time.monotonic()
    version = store.import_raw(
        Path(args.raw), args.name, chunk_size=args.chunk_size << 20, progress=_bar(sys.stderr, f"import {args.name}")
    )
    seconds = time.monotonic() - started
    ix = version.index
    out.write(
        f"{version.ref}  digest {version.digest}\n"
        f"  disk {_size(ix.disk_size)}, {len(ix.chunks)} chunks of {_size(ix.chunk_size)} ({ix.holes} holes), "
        f"stored {_size(store.stored_bytes(version))}, {seconds:.1f} s; current\n"
    )
    return 0


def cmd_list(args: argparse.Namespace, out: TextIO) -> int:
    images = _store(args).list_images()
    if args.json:
        dump([i.to_dict() for i in images], out)
        return 0
    if not images:
        out.write("no images\n")
    for info in images:
        out.write(f"{info.name}\n")
        for v in info.versions:
            mark = "*" if info.current is not None and v.digest == info.current.digest else " "
            out.write(
                f"  {mark} {v.label}  disk {_size(v.index.disk_size)}  mapped {_size(v.index.mapped_bytes)}  "
                f"{len(v.index.chunks)} chunks\n"
            )
    return 0


def cmd_verify(args: argparse.Namespace, out: TextIO) -> int:
    report = _store(args).verify(args.ref, progress=_bar(sys.stderr, f"verify {args.ref}"))
    if args.json:
        dump(report.to_dict(), out)
    else:
        for line in report.problems():
            out.write(f"{report.ref}: {line}\n")
        verdict = "OK" if report.ok else f"{len(report.problems())} problem(s)"
        out.write(
            f"{report.ref}: {verdict}: {report.checked} chunks ({_size(report.bytes_checked)}) re-hashed, "
            f"{report.holes} holes, {report.seconds:.1f} s\n"
        )
    return 0 if report.ok else EXIT_FAILED


def cmd_export(args: argparse.Namespace, out: TextIO) -> int:
    zst, bmap = _store(args).export(args.ref, Path(args.outdir))
    out.write(f"{zst}\n{bmap}\n")
    out.write(f"write it with: bmaptool copy --bmap {bmap} {zst} /dev/TARGET\n")
    return 0


def _in_flight(args: argparse.Namespace, name: str, out: TextIO) -> tuple[set[str], set[str] | None]:
    """Digests of ``name``'s versions that imaging runs not yet ended were planned with, and of those machines
    hold (delta re-imaging keeps their index: docs/delta.md), from the server's state store (``--state-dir``, else
    the config's, else the default): retention must not remove what a PC is being written from. A ``--state-dir``
    without a database is an error; no database at the default place (no server ran here) spares nothing, leaves
    the held indexes as they are, and says so."""
    from provision.delta import held_for_retention
    from provision.errors import FatalError
    from provision.store import Store

    db = state_dir_of(args) / "provision.db"
    if not db.is_file():
        if args.state_dir:
            raise FatalError(f"no server database at {db}: cannot tell which versions runs in flight use")
        out.write(f"note: no server database at {db}: no imaging runs in flight to spare\n")
        return set(), None
    with Store(db) as store:
        # a capture in flight has no digest yet (its chunks are pinned instead: _capture_pins)
        in_use = {r.digest for r in store.runs() if r.finished is None and r.image == name and r.capture is None}
        return in_use, held_for_retention(store, name)


def _capture_pins(db: Path) -> set[str]:
    """The chunks captures in flight rely on (read by the sweep under the image store's exclusive lock)."""
    from provision.store import Store

    with Store(db) as store:
        return store.capture_pins()


def cmd_retain(args: argparse.Namespace, out: TextIO) -> int:
    store = _store(args)
    in_use, held = _in_flight(args, args.name, out)
    spared = [v.label for v in store.versions(args.name) if v.digest in in_use]
    db = state_dir_of(args) / "provision.db"
    pinned = functools.partial(_capture_pins, db) if db.is_file() else None
    report = store.retain(args.name, keep=args.keep, in_use=in_use, held=held, pinned=pinned)
    out.write(f"{args.name}: kept {', '.join(report.kept) or 'none'}; removed {', '.join(report.removed) or 'none'}\n")
    if spared:
        out.write(f"  spared for imaging runs in flight: {', '.join(spared)}\n")
    if report.indexes_held:
        out.write(f"  index kept for machines that hold: {', '.join(report.indexes_held)}\n")
    gc = report.gc
    out.write(f"  {gc.removed_chunks} chunks removed ({_size(gc.freed_bytes)}), {gc.referenced} still referenced\n")
    return 0


def cmd_build(args: argparse.Namespace, out: TextIO) -> int:
    from provision.builder import build_image

    def progress(event: Any) -> None:
        if event.fraction is None:  # a step starts; finer progress is in the build log
            out.write(f"[{event.index}/{event.total}] {event.image}: {event.step} {event.message}\n".rstrip() + "\n")
            out.flush()

    result = build_image(Path(args.definition), _store(args), progress=progress, fresh=args.fresh)
    d = result.to_dict()
    chunks = d["chunks"]
    out.write(
        f"{d['ref']} ({d['label']}): {_size(d['disk_size'])} disk, {chunks.get('new')} new chunks of "
        f"{chunks.get('total')} ({chunks.get('holes')} holes), {d['packages']} packages, {d['seconds']} s; "
        f"{'current' if d['published'] else 'not published'}; log {d['log']}\n"
        f"  {d['mode_reason']}\n"
    )
    return 0


def cmd_rebuild(args: argparse.Namespace, out: TextIO) -> int:
    from provision.builder import rebuild_all

    results = rebuild_all(Path(args.images), _store(args), fresh=args.fresh)
    if args.json:
        dump([r.to_dict() for r in results], out)
    failed = 0
    for r in results:
        d = r.to_dict()
        failed += d["status"] == "failed"
        if args.json:
            continue
        out.write(f"{d['name']}: {d['status']}: {d['reason']}\n")
        changes = d.get("changes") or {}
        for kind in ("added", "removed"):
            if changes.get(kind):
                out.write(f"  {kind}: {', '.join(str(i) for i in changes[kind])}\n")
        upgraded = changes.get("upgraded") or {}
        if upgraded:
            text = ", ".join(f"{name} {v['from']} -> {v['to']}" for name, v in upgraded.items())
            out.write(f"  upgraded: {text}\n")
        if d.get("mode_reason"):
            out.write(f"  {d['mode_reason']}\n")
        if d.get("chunks"):
            c = d["chunks"]
            out.write(f"  chunks: {c.get('new')} new of {c.get('total')} ({c.get('holes')} holes)\n")
        if d.get("version"):
            out.write(f"  now current: {d['version']}\n")
    return EXIT_FAILED if failed else 0


def add_commands(sub: Any) -> None:
    image = sub.add_parser("image", help="master images: import, list, verify, export, build, rebuild")
    isub = image.add_subparsers(dest="image_command", metavar="SUBCOMMAND", parser_class=Parser, required=True)

    def command(name: str, help_text: str, func: Callable[[argparse.Namespace, TextIO], int]) -> Any:
        p = isub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        p.add_argument("--store", metavar="DIR", help=f"image store (default: the config's, else {DEFAULT_STORE})")
        p.add_argument("--config", metavar="FILE", help="server configuration naming the image store")
        p.set_defaults(func=func)
        return p

    p = command("import", "import a raw disk (e.g. a golden PC captured by hand) as a new current version", cmd_import)
    p.add_argument("raw", metavar="RAW", help="raw disk image file (partition table + partitions)")
    p.add_argument("--name", required=True, help="image name (a-z, 0-9, . _ -)")
    p.add_argument("--chunk-size", type=int, default=4, metavar="MIB", help="chunk size in MiB (default 4)")
    p = command("list", "list images and their versions (* marks current)", cmd_list)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = command("verify", "re-hash every stored chunk of a version; exit 1 naming each bad chunk", cmd_verify)
    p.add_argument("ref", metavar="NAME[@VERSION]", help="image, optionally @current, @LABEL or @DIGEST-PREFIX")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = command("export", "write disk.img.zst + disk.bmap for bmaptool copy", cmd_export)
    p.add_argument("ref", metavar="NAME[@VERSION]")
    p.add_argument("outdir", metavar="OUTDIR")
    p = command(
        "retain", "keep the newest versions of an image and those runs in flight use, remove the rest and orphan "
        "chunks", cmd_retain,
    )  # fmt: skip
    p.add_argument("name", metavar="NAME")
    p.add_argument("--keep", type=int, default=3, metavar="N", help="versions to keep (default 3)")
    p.add_argument(
        "--state-dir", metavar="DIR", help="the server's state (runs in flight keep their versions; default: "
        f"the config's, else {DEFAULT_STATE})"
    )  # fmt: skip
    p = command("build", "build an image from a definition (images/*.yaml) and publish it", cmd_build)
    p.add_argument("definition", metavar="DEF.yaml")
    p.add_argument(
        "--fresh", action="store_true", help="lay the disk out anew (default: update the current version's disk in "
        "place when its layout allows)"
    )  # fmt: skip
    imagediff.add_command(command, _store)  # image diff A B
    imagecapture.add_command(command)  # image capture MAC --name NAME
    p = command("rebuild", "rebuild every definition whose inputs changed (the nightly job)", cmd_rebuild)
    p.add_argument("--all", action="store_true", required=True, help="every definition in --images")
    p.add_argument("--images", metavar="DIR", default="images", help="definitions folder (default: images/)")
    p.add_argument("--fresh", action="store_true", help="lay every image built out anew instead of in place")
    p.add_argument("--json", action="store_true", help="machine-readable output")
