"""`provision machines` and `provision runs MAC`: what the server knows about machines and their imaging runs."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, TextIO

from provision.cli.common import Parser, UsageError, dump

DEFAULT_STATE = Path("/var/lib/provision")


def _open_store(args: argparse.Namespace) -> Any:
    from provision.config import load_config
    from provision.errors import FatalError
    from provision.store import Store

    if args.state_dir:
        state = Path(args.state_dir)
    elif args.config:
        state = load_config(Path(args.config)).state_dir
    else:
        state = DEFAULT_STATE
    db = state / "provision.db"
    if not db.is_file():
        raise FatalError(f"no server database at {db} (has provision serve run with this state directory?)")
    return Store(db)


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _clean(value: object, width: int = 0) -> str:
    """A table cell: control characters from machine-reported strings never reach the terminal."""
    text = "-" if value is None or value == "" else "".join(c if c.isprintable() else "?" for c in str(value))
    return text[:width] if width else text


def _verified_digest(store: Any, run: Any) -> str | None:
    complete = [v for v in store.verifications(run.id) if v.complete and v.digest == run.digest]
    return complete[-1].digest if complete and run.state.value == "done" else None


def cmd_machines(args: argparse.Namespace, out: TextIO) -> int:
    with _open_store(args) as store:
        rows = []
        for m in store.machines():
            runs = store.runs(m.mac)
            last = runs[-1] if runs else None
            rows.append(
                {
                    **m.to_dict(),
                    "last_run": None if last is None else last.id,
                    "last_run_state": None if last is None else last.state.value,
                    "image": None if last is None else last.image,
                    "image_label": None if last is None else last.label,
                    "verified_digest": None if last is None else _verified_digest(store, last),
                }
            )
    if args.json:
        dump(rows, out)
        return 0
    out.write(f"{'MAC':17}  {'STATE':8}  {'VENDOR / PRODUCT':30}  {'RECIPE':16}  {'LAST SEEN':19}  IMAGE\n")
    for r in rows:
        model = f"{_clean(r['vendor'])} / {_clean(r['product'])}"
        image = "-"
        if r["image_label"]:
            verified = r["verified_digest"]
            image = f"{_clean(r['image'])}@{_clean(r['image_label'])} ({_clean(r['last_run_state'])}"
            image += f", verified {verified[:12]})" if verified else ")"
        out.write(
            f"{r['mac']:17}  {r['state']:8}  {_clean(model, 30):30}  {_clean(r['recipe'], 16):16}  "
            f"{_when(r['last_seen']):19}  {image}\n"
        )
    return 0


def cmd_runs(args: argparse.Namespace, out: TextIO) -> int:
    from provision.macaddr import BadMac, normalize_mac

    try:
        mac = normalize_mac(args.mac)
    except BadMac as exc:
        raise UsageError(str(exc)) from None
    with _open_store(args) as store:
        rows = [
            {**r.to_dict(), "verifications": [v.to_dict() for v in store.verifications(r.id)]} for r in store.runs(mac)
        ]
    if args.json:
        dump(rows, out)
        return 0
    if not rows:
        out.write(f"no runs for {mac}\n")
        return 0
    out.write(f"{'RUN':32}  {'RECIPE':16}  {'IMAGE':36}  {'STATE':11}  {'BYTES':>14}  {'MiB/s':>7}  VERIFICATION\n")
    for r in rows:
        checks = r["verifications"]
        last = checks[-1] if checks else None
        verification = "-"
        if last is not None:
            verification = f"{last['verified']}/{last['chunks']} chunks, read-back {last['read_back']}"
            verification += f", digest {last['digest'][:12]}"
        rate = f"{r['mean_rate'] / 2**20:7.1f}" if r["mean_rate"] else f"{'-':>7}"
        image = f"{_clean(r['image'])}@{_clean(r['label'])}"
        out.write(
            f"{r['id']:32}  {_clean(r['recipe'], 16):16}  {_clean(image, 36):36}  {r['state']:11}  "
            f"{r['bytes_written']:>14}  {rate}  {verification}\n"
        )
        if r["reason"]:
            out.write(f"{'':32}  reason: {_clean(r['reason'])}\n")
    return 0


def _store_options(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument("--state-dir", metavar="DIR", help=f"the server's state directory (default: {DEFAULT_STATE})")
    where.add_argument("--config", metavar="FILE", help="the server's YAML configuration (for its state_dir)")
    p.add_argument("--json", action="store_true", help="JSON output")


def add_commands(sub: Any) -> None:
    p: Parser = sub.add_parser("machines", help="machines the server knows, with their last imaging run")
    _store_options(p)
    p.set_defaults(func=cmd_machines)
    p = sub.add_parser("runs", help="the imaging runs of one machine")
    p.add_argument("mac", metavar="MAC", help="the machine's MAC address")
    _store_options(p)
    p.set_defaults(func=cmd_runs)
