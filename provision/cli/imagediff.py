"""`provision image diff A B`: the chunks, packages and files that differ between two versions of an image.

Registered by ``provision.cli.images`` (``add_command``): it shares that group's ``--store`` / ``--config``.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from provision.cli.common import dump

DEFAULT_LIMIT = 50

StoreOf = Callable[[argparse.Namespace], Any]


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _capped(lines: list[str], limit: int, out: TextIO) -> None:
    shown = lines if limit <= 0 else lines[:limit]
    for line in shown:
        out.write(f"  {line}\n")
    if len(shown) < len(lines):
        out.write(f"  ... and {len(lines) - len(shown)} more (--limit 0 shows all)\n")


def _side(tag: str, side: Mapping[str, Any]) -> str:
    sha = side.get("disk_sha256")
    return f"{tag}  {side['ref']}  disk {human(side['disk_size'])}" + (f", sha256 {sha[:16]}" if sha else "")


def _entry(path: str, entry: Mapping[str, Any]) -> str:
    if entry["kind"] == "dir":
        return f"{path}/"
    return f"{path}  {human(entry['size'])}" + ("" if entry["kind"] == "file" else f"  ({entry['kind']})")


def write_text(d: Mapping[str, Any], out: TextIO, limit: int) -> None:
    """The diff (``ImageDiff.to_dict()``) for people."""
    out.write(_side("A", d["a"]) + "\n" + _side("B", d["b"]) + "\n")
    c = d["chunks"]
    total_b = c["chunks"]["b"]
    if d["same_content"]:
        out.write(f"same content: the two disks are identical, bit for bit ({_plural(total_b, 'chunk')})\n")
    elif not c["comparable"]:
        sizes = c["chunk_size"]
        out.write(f"chunks: sizes differ ({human(sizes['a'])} / {human(sizes['b'])}): positions not compared\n")
    else:
        out.write(
            f"chunks: {c['differ']} of {total_b} positions differ ({human(c['differ_bytes'])}); by the partitions "
            "they overlap:\n"
        )
        for part, count in c["by_partition"].items():
            out.write(f"  {part:<16} {_plural(count['chunks'], 'chunk'):>12}  {human(count['bytes']):>10}\n")
    if not d["same_content"]:
        out.write(f"  B has {_plural(c['new_chunks'], 'chunk')} A does not hold ({human(c['new_bytes'])} new in the "
                  "store)\n")  # fmt: skip
        delta = c.get("delta")
        if delta is not None:
            out.write(
                f"  a PC holding A fetches {_plural(delta['chunks'], 'chunk')} for B ({human(delta['download'])} to "
                f"download, {delta['share']:.1%} of B's {human(delta['total_download'])})\n"
            )
    p = d["packages"]
    if p is None:
        out.write("packages: not recorded by one of the versions (a disk imported by hand?)\n")
    else:
        out.write(
            f"packages: {len(p['added'])} added, {len(p['removed'])} removed, {len(p['upgraded'])} upgraded, "
            f"{p['unchanged']} unchanged\n"
        )
        lines = [f"+ {n} {v}" for n, v in p["added"].items()]
        lines += [f"- {n} {v}" for n, v in p["removed"].items()]
        lines += [f"~ {n} {v['from']} -> {v['to']}" for n, v in p["upgraded"].items()]
        _capped(lines, limit, out)
    f = d["files"]
    if f is None:
        out.write(f"files: {d['files_note'] or 'not compared'}\n")
        return
    out.write(
        f"files (partition {f['partition']}): {len(f['added'])} added, {len(f['removed'])} removed, "
        f"{len(f['changed'])} changed, {f['unchanged']} unchanged\n"
    )
    lines = [f"+ {_entry(path, e)}" for path, e in f["added"].items()]
    lines += [f"- {_entry(path, e)}" for path, e in f["removed"].items()]
    lines += [
        f"~ {ch['path']}  {human(ch['size_a'])} -> {human(ch['size_b'])}  ({', '.join(ch['what'])})"
        for ch in f["changed"]
    ]
    _capped(lines, limit, out)


def cmd_diff(args: argparse.Namespace, out: TextIO, store_of: StoreOf) -> int:
    from provision.images.diff import file_diff, version_diff
    from provision.images.errors import ImageError
    from provision.images.rootfiles import read_root_files

    store = store_of(args)
    a, b = store.resolve(args.a), store.resolve(args.b)
    files = None
    note = "not compared (--no-files)"
    untrusted = [v.ref for v in (a, b) if "definition" not in v.index.provenance]
    if args.files is None and untrusted:  # debugfs rdump writes what a file system says, as the user running it
        note = (f"not compared: {', '.join(untrusted)} not built here (imported): its file system is not read "
                "unless --files says so (only for disks you trust)")  # fmt: skip
    elif args.files is not False:
        scratch = Path(args.workdir) if args.workdir else Path(tempfile.gettempdir())
        try:
            files_a, part = read_root_files(store, a, scratch)
            files_b, _ = read_root_files(store, b, scratch)
            files, note = file_diff(files_a, files_b, partition=part), ""
        except ImageError as exc:
            note = f"not compared: {exc}"
    sizes = {}
    for sha in b.index.unique_chunks():
        try:
            sizes[sha] = store.chunks.path(sha).stat().st_size
        except OSError:  # a chunk missing from the store: its plain length is counted
            continue
    diff = version_diff(a, b, files, note, sizes).to_dict()
    if args.json:
        dump(diff, out)
    else:
        write_text(diff, out, args.limit)
    return 0


def add_command(command: Callable[..., Any], store_of: StoreOf) -> None:
    """Add ``diff`` with ``command`` (``images.add_commands``' helper: a subparser with --store/--config)."""
    p = command(
        "diff",
        "list the chunks, packages and files that differ between two versions",
        lambda args, out: cmd_diff(args, out, store_of),
    )
    p.add_argument("a", metavar="A", help="NAME[@VERSION]: current, a label or 8+ hex digits of the digest")
    p.add_argument("b", metavar="B", help="NAME[@VERSION], compared with A")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--no-files", dest="files", action="store_false", default=None,
        help="do not read the root file systems (chunks and packages only: instant)",
    )  # fmt: skip
    p.add_argument(
        "--files", dest="files", action="store_true", default=None,
        help="read the root file systems of versions not built here too (imported disks: only ones you trust)",
    )  # fmt: skip
    p.add_argument("--workdir", metavar="DIR", help="where the root file systems are unpacked (default: TMPDIR)")
    p.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"lines per list (default {DEFAULT_LIMIT}; 0: all)",
    )
