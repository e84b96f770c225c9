"""`provision machines` and `provision runs MAC`: what the server knows about machines and their imaging runs
(each drive's erasure among them); `provision machines lot MAC LOT`: the donor's delivery a machine came in;
`provision machines destination MAC VALUE`: where it goes (school, family, association, recycling)."""

from __future__ import annotations

import argparse
import time
from typing import Any, TextIO

from provision.cli.common import DEFAULT_STATE, Parser, UsageError, dump, state_dir_of
from provision.states import Destination

DESTINATIONS = tuple(d.value for d in Destination)


def _open_store(args: argparse.Namespace) -> Any:
    from provision.errors import FatalError
    from provision.store import Store

    db = state_dir_of(args) / "provision.db"
    if not db.is_file():
        raise FatalError(f"no server database at {db} (has provision serve run with this state directory?)")
    return Store(db)


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _clean(value: object, width: int = 0) -> str:
    """A table cell: control characters from machine-reported strings never reach the terminal."""
    text = "-" if value is None or value == "" else "".join(c if c.isprintable() else "?" for c in str(value))
    return text[:width] if width else text


def printable(text: str, *, lines: bool = False) -> str:
    """Text from a machine or a hook for the terminal: control characters become ``?`` (line breaks and tabs
    kept when ``lines``)."""
    keep = "\n\t" if lines else ""
    return "".join(c if c.isprintable() or c in keep else "?" for c in text)


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
                    "erase_only": None if last is None else last.erase_only,
                }
            )
    if args.json:
        dump(rows, out)
        return 0
    out.write(f"{'MAC':17}  {'STATE':8}  {'VENDOR / PRODUCT':30}  {'RECIPE':16}  {'LAST SEEN':19}  IMAGE\n")
    for r in rows:
        model = f"{_clean(r['vendor'])} / {_clean(r['product'])}"
        image = "-"
        if r["erase_only"]:
            image = f"erase only ({_clean(r['last_run_state'])})"
        elif r["image_label"]:
            verified = r["verified_digest"]
            image = f"{_clean(r['image'])}@{_clean(r['image_label'])} ({_clean(r['last_run_state'])}"
            image += f", verified {verified[:12]})" if verified else ")"
        out.write(
            f"{r['mac']:17}  {r['state']:8}  {_clean(model, 30):30}  {_clean(r['recipe'], 16):16}  "
            f"{_when(r['last_seen']):19}  {image}{'  lot ' + _clean(r['lot']) if r['lot'] else ''}\n"
        )
    return 0


def _mac_and_operator(args: argparse.Namespace) -> tuple[str, str]:
    """The machine (``args.mac``, normalized; UsageError if it is no MAC) and the operator (``--by``, else
    your login) of a ``provision machines`` change."""
    import getpass

    from provision.macaddr import BadMac, normalize_mac

    try:
        mac = normalize_mac(args.mac)
    except BadMac as exc:
        raise UsageError(str(exc)) from None
    return mac, args.by or getpass.getuser()


def cmd_lot(args: argparse.Namespace, out: TextIO) -> int:
    """Set (or with ``-``, clear) the lot of a machine, as operator ``--by``."""
    mac, by = _mac_and_operator(args)
    with _open_store(args) as store:
        machine = store.set_lot(mac, None if args.lot == "-" else args.lot, by)
    if args.json:
        dump(machine.to_dict(), out)
    else:
        out.write(f"{mac}: lot {_clean(machine.lot)} (set by {_clean(by)})\n")
    return 0


def cmd_destination(args: argparse.Namespace, out: TextIO) -> int:
    """Set (or with ``-``, clear) the destination of a machine, as operator ``--by``: it wins over the
    destination its runs' recipes gave (the city's report, ``provision report``)."""
    mac, by = _mac_and_operator(args)
    with _open_store(args) as store:
        machine = store.set_destination(mac, None if args.destination == "-" else Destination(args.destination), by)
    if args.json:
        dump(machine.to_dict(), out)
    else:
        out.write(f"{mac}: destination {_clean(machine.destination)} (set by {_clean(by)})\n")
    return 0


def erasure_lines(records: list[dict[str, Any]]) -> list[str]:
    """One line per drive of a run's erasure: device, model, serial, method, NIST category, verification,
    result (and the reason of a drive not ok), then who and which lot."""
    lines = []
    for e in records:
        check = e.get("verification")
        verified = "-" if check is None else f"{check['method']} {check['pattern']} {'ok' if check['ok'] else 'FAILED'}"
        result = "ok" if e["ok"] else "NOT OK"
        lines.append(
            f"erase {_clean(e['device'], 10):10}  {_clean(e.get('model'), 20):20}  "
            f"serial {_clean(e.get('serial'), 24):24}  {_clean(e['method'], 27):27}  {e['category']:5}  "
            f"verify {verified:22}  {result}"
        )
        if not e["ok"]:
            lines.append(f"  reason: {_clean(e.get('reason'))}")
    if records:
        lines.append(f"erased by {_clean(records[0]['operator'])}, lot {_clean(records[0]['lot'])}")
    return lines


def transfer_line(t: dict[str, Any]) -> str:
    """How a run's chunks came (its report's transfer, docs/multicast.md), on one line."""
    mib = 2**20
    line = (f"transfer {_clean(t.get('mode'))}: {t.get('bytes_multicast', 0) / mib:.1f} MiB by multicast "
            f"({t.get('chunks_multicast', 0)} chunks), {t.get('bytes_http', 0) / mib:.1f} MiB by HTTP "
            f"({t.get('chunks_http', 0)} chunks, {t.get('repair_bytes', 0) / mib:.1f} MiB of repairs)")  # fmt: skip
    lost, kept = t.get("datagrams_lost", 0), t.get("datagrams", 0)
    if lost or kept:
        line += f", {lost} of {lost + kept} datagrams lost ({100 * lost / max(1, lost + kept):.1f} %)"
    if t.get("left_because"):
        line += f"; left: {_clean(t['left_because'])}"
    return line


def download_line(r: dict[str, Any]) -> str | None:
    """A run's download against what it verified, and the prediction when its machine held a version
    (docs/delta.md): ``held LABEL: predicted 0.2 MiB, fetched 0.2 MiB of 6.4 MiB verified``."""
    mib = 2**20

    def size(n: object) -> str:
        return f"{n / mib:.1f} MiB" if isinstance(n, int) else "?"

    fetched = f"fetched {size(r.get('fetched_bytes'))} of {size(r.get('verified_bytes'))} verified"
    if r.get("held_digest"):
        predicted = f"predicted {size(r.get('predicted_download'))} ({size(r.get('predicted_bytes'))} to write)"
        return f"held {_clean(r.get('held_label'))}: {predicted}, {fetched}"
    if r.get("fetched_bytes") is None and r.get("verified_bytes") is None:
        return None
    return f"nothing held: {fetched}"


def capture_line(c: dict[str, Any]) -> str:
    """A capture run's figures (docs/capture.md): ``capture of the disk: 129 of 129 chunks offered, 3 uploaded (2
    new), 0.1 MiB sent``."""
    positions = "?" if c.get("positions") is None else c["positions"]
    return (f"capture of the disk: {c['offered']} of {positions} chunks offered, {c['uploaded_chunks']} uploaded "
            f"({c['new_chunks']} new), {c['uploaded_bytes'] / 2**20:.1f} MiB sent")  # fmt: skip


def cmd_runs(args: argparse.Namespace, out: TextIO) -> int:
    from provision.macaddr import BadMac, normalize_mac

    try:
        mac = normalize_mac(args.mac)
    except BadMac as exc:
        raise UsageError(str(exc)) from None
    from provision.postinstall import WARNINGS, describe

    with _open_store(args) as store:
        rows = []
        for r in store.runs(mac):
            hooks = store.hook_results(r.id)
            warned = [h for h in hooks if not h.ok and h.on_failure == "warn" and not h.rerun]
            rows.append({
                **r.to_dict(), "verifications": [v.to_dict() for v in store.verifications(r.id)],
                "erasures": [e.to_dict() for e in store.erasures(run=r.id)],
                "hooks": [{**h.to_dict(), "result": describe(h)} for h in hooks],
                "warnings": [f"hook {h.name} {describe(h)}" for h in warned] if r.state.value == "done" else [],
                **({"captured": store.capture_run(r.id).to_dict()} if r.capture is not None else {}),
            })  # fmt: skip
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
        image = "erase only" if r["erase_only"] else f"{_clean(r['image'])}@{_clean(r['label'])}"
        out.write(
            f"{r['id']:32}  {_clean(r['recipe'], 16):16}  {_clean(image, 36):36}  {r['state']:11}  "
            f"{r['bytes_written']:>14}  {rate}  {verification}\n"
        )
        for line in erasure_lines(r["erasures"]):
            out.write(f"{'':32}  {line}\n")
        if r["transfer"]:
            out.write(f"{'':32}  {transfer_line(r['transfer'])}\n")
        if r.get("captured"):
            out.write(f"{'':32}  {capture_line(r['captured'])}\n")
        if (download := download_line(r)) is not None:
            out.write(f"{'':32}  {download}\n")
        for h in r["hooks"]:
            code = "-" if h["exit_code"] is None else h["exit_code"]
            status = "ok" if h["ok"] else "timed out" if h["timed_out"] else "error" if h["error"] else "failed"
            notes = [n for n, on in (("on_failure warn", h["on_failure"] == "warn"), ("run again", h["rerun"])) if on]
            out.write(f"{'':32}  hook {_clean(h['name'], 20):20}  {h['place']:6}  {status:9}  exit {code!s:>4}  "
                      f"{h['seconds']:7.1f} s{'  (' + ', '.join(notes) + ')' if notes else ''}\n")  # fmt: skip
            if h.get("installed"):
                packages = ", ".join(f"{name} {version}" for name, version in sorted(h["installed"].items()))
                out.write(f"{'':32}    installed: {_clean(packages)}\n")
        if r["reason"]:  # a done run's reason lists its warnings (failed hooks whose on_failure is warn)
            warned = r["state"] == "done" and r["warnings"]
            reason = r["reason"].removeprefix(WARNINGS) if warned else r["reason"]
            out.write(f"{'':32}  {'warnings' if warned else 'reason'}: {_clean(reason)}\n")
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
    actions = p.add_subparsers(dest="machines_action", metavar="{lot,destination}")
    lot = actions.add_parser("lot", help="set the lot (the donor's delivery) of a machine: MAC LOT, or MAC - to clear")
    lot.add_argument("mac", metavar="MAC", help="the machine's MAC address")
    lot.add_argument("lot", metavar="LOT", help="the lot, e.g. 'Banque Dupont 2026-12' ('-': none)")
    lot.add_argument("--by", metavar="USER", help="the operator recorded with its erasures (default: your login)")
    _store_options(lot)
    lot.set_defaults(func=cmd_lot)
    dest = actions.add_parser("destination", help="set where a machine goes: MAC VALUE, or MAC - to clear")
    dest.add_argument("mac", metavar="MAC", help="the machine's MAC address")
    dest.add_argument("destination", metavar="VALUE", choices=[*DESTINATIONS, "-"],
                      help=f"one of {', '.join(DESTINATIONS)} ('-': none; its recipe's then counts)")  # fmt: skip
    dest.add_argument("--by", metavar="USER", help="the operator recorded in its event (default: your login)")
    _store_options(dest)
    dest.set_defaults(func=cmd_destination)
    p = sub.add_parser("runs", help="the imaging runs of one machine")
    p.add_argument("mac", metavar="MAC", help="the machine's MAC address")
    _store_options(p)
    p.set_defaults(func=cmd_runs)
