"""`provision image capture MAC --name NAME`: a golden PC's disk captured as a new version of an image at its next
network boot (docs/capture.md). The request is kept in the server's state store (as `provision machines` changes
are); the machine goes back to `new`, so its next network boot runs the live environment; `--wait` follows the
capture run to its end (alone, without --name: the capture asked before); `--cancel` forgets the request and ends
a capture run of the operator's that never ended (a PC that rebooted mid-capture would be captured again).

Registered by ``provision.cli.images`` (``add_command``): it shares that group's ``--config``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any, TextIO

from provision.cli.common import DEFAULT_STATE, EXIT_FAILED, UsageError, dump
from provision.cli.machines import _clean, _mac_and_operator, _open_store

POLL = 1.0  # seconds between two looks at the store while waiting
DISK_KEYS = ("select", "transport", "model", "name", "min_gb")


def disk_rule(items: list[str]) -> dict[str, Any]:
    """``--disk-rule KEY=VALUE`` items as a recipe's ``target_disk`` (checked as a recipe's is)."""
    from pydantic import ValidationError

    from provision.recipes.schema import TargetDisk

    rule: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in DISK_KEYS:
            raise UsageError(f"--disk-rule {item!r}: KEY=VALUE with KEY one of {', '.join(DISK_KEYS)}")
        rule[key] = (
            value.split(",") if key == "transport" else int(value) if key == "min_gb" and value.isdigit() else value
        )
    try:
        return TargetDisk.model_validate(rule).model_dump(mode="json", exclude_none=True)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise UsageError(f"--disk-rule: {problems}") from None


def cmd_capture(args: argparse.Namespace, out: TextIO) -> int:
    from provision.images.errors import ImageError
    from provision.images.index import check_name

    mac, by = _mac_and_operator(args)
    with _open_store(args) as store:
        if args.cancel:
            cancelled = store.cancel_capture(mac, by)
            out.write(f"{mac}: capture as {cancelled.image} cancelled\n" if cancelled else f"{mac}: no capture asked\n")
            return 0
        if not args.name and args.wait:  # follow a capture asked before: from its request, else its newest run
            pending = store.capture_request(mac)
            runs = [r for r in store.runs(mac) if r.capture is not None]
            if pending is None and not runs:
                raise UsageError(f"{mac}: no capture asked: provision image capture {mac} --name NAME")
            since = pending.requested_at if pending is not None else runs[-1].started
            return wait(store, mac, since, args.timeout, out, json_out=args.json)
        if not args.name:
            raise UsageError("--name NAME is needed: the image the disk is captured as")
        try:
            check_name(args.name)
        except ImageError as exc:
            raise UsageError(f"--name: {exc}") from None
        request = store.request_capture(mac, args.name, by, disk_rule(args.disk_rule or []))
        asked = time.time()
        if args.json and not args.wait:
            dump(request.to_dict(), out)
            return 0
        out.write(f"{mac}: will be captured as {request.image} (asked by {_clean(by)})\n"
                  f"power the PC on with network boot: it will be captured as {request.image}\n")  # fmt: skip
        if not args.wait:
            return 0
        return wait(store, mac, asked, args.timeout, out, json_out=args.json)


def _captured_run(store: Any, mac: str, since: float) -> Any:
    runs = [r for r in store.runs(mac) if r.capture is not None and r.started >= since]
    return runs[-1] if runs else None


def wait(store: Any, mac: str, since: float, timeout: float, out: TextIO, *, json_out: bool = False,
         clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> int:  # fmt: skip
    """Follow the machine's capture run (started at ``since`` or later) to its end: progress lines, then the
    result. EXIT_FAILED when it failed or ``timeout`` seconds passed."""
    deadline = clock() + timeout
    said = ""
    while clock() < deadline:
        run = _captured_run(store, mac, since)
        if run is None:
            line = "waiting for the PC's network boot ..."
        else:
            capture = store.capture_run(run.id)
            if run.state.value in ("done", "failed", "repair"):
                return _result(run, capture, out, json_out)
            line = f"run {run.id}: {run.state.value}"
            if capture is not None and capture.positions:
                line += (f", {capture.offered} of {capture.positions} chunks read, {capture.uploaded_chunks} "
                         f"uploaded ({capture.uploaded_bytes / 2**20:.1f} MiB)")  # fmt: skip
        if line != said:
            out.write(line + "\n")
            out.flush()
            said = line
        sleep(POLL)
    out.write(f"{mac}: no end of the capture after {timeout:.0f} s: the request stays (see provision runs {mac}; "
              f"cancel it with provision image capture {mac} --cancel)\n")  # fmt: skip
    return EXIT_FAILED


def _result(run: Any, capture: Any, out: TextIO, json_out: bool) -> int:
    if json_out:
        dump({**run.to_dict(), "captured": None if capture is None else capture.to_dict()}, out)
        return 0 if run.state.value == "done" else EXIT_FAILED
    if run.state.value != "done":
        out.write(f"capture failed: {_clean(run.reason)}\n"
                  f"the PC is captured again at its next network boot (provision image capture {run.mac} --cancel: "
                  "not)\n")  # fmt: skip
        return EXIT_FAILED
    out.write(f"captured as {run.image}@{run.label}\n")
    if capture is not None:
        out.write(f"chunks: {capture.positions} in all, {capture.new_chunks} new, {capture.uploaded_chunks} "
                  f"uploaded ({capture.uploaded_bytes} bytes sent)\n")  # fmt: skip
    return 0


def add_command(command: Callable[[str, str, Callable[[argparse.Namespace, TextIO], int]], Any]) -> None:
    """``image capture`` in the ``image`` group (``command`` is its helper)."""
    p = command("capture", "capture a golden PC's disk as a new version of an image at its next network boot",
                cmd_capture)  # fmt: skip
    p.add_argument("mac", metavar="MAC", help="the golden PC's MAC address")
    p.add_argument("--name", metavar="NAME", help="the image the disk becomes a new version of")
    p.add_argument("--disk-rule", metavar="KEY=VALUE", action="append",
                   help=f"which disk, as a recipe's target_disk ({', '.join(DISK_KEYS)}); default: the one internal "
                        "disk")  # fmt: skip
    p.add_argument("--wait", action="store_true", help="follow the capture to its end")
    p.add_argument("--timeout", type=float, default=4 * 3600.0, metavar="S", help="with --wait (default 4 h)")
    p.add_argument("--cancel", action="store_true", help="forget the request, end an unfinished capture")
    p.add_argument("--by", metavar="USER", help="who asks (default: your login)")
    p.add_argument(
        "--state-dir", metavar="DIR", help=f"the server's state (default: the config's, else {DEFAULT_STATE})"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
