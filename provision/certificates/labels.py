"""Printable labels: one per machine (a 70 x 37 mm PDF page), or A4 sheets of 3 x 8 labels of 70 x 37 mm (a
common sticker sheet) for a rack, a lot or a list of MACs.

A label carries a QR code of the machine's asset id (its host name, else its MAC; segno, as SVG) and a short spec:
maker and model, CPU, RAM, disk, the image version it was given, and the date it was prepared.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

import segno

from provision.certificates.errors import NothingToCertify
from provision.certificates.gather import CertificateStore, imaging_of, machine_summary
from provision.certificates.render import render
from provision.certificates.strings import memory, size
from provision.store.records import Run


@dataclass(frozen=True)
class Sheet:
    """A sheet of stickers: its grid and each label's size, in millimetres."""

    columns: int = 3
    rows: int = 8
    width_mm: float = 70.0
    height_mm: float = 37.0
    top_mm: float = 0.5  # 297 - 8 x 37: the sheet's top margin

    @property
    def per_page(self) -> int:
        return self.columns * self.rows


A4_3X8 = Sheet()


@dataclass(frozen=True)
class Label:
    """What one label says (``None``: unknown, left out)."""

    asset_id: str
    mac: str
    maker_model: str | None
    cpu: str | None
    ram_mb: int | None
    disk_gb: int | None
    disk_transport: tuple[str, ...]
    image: str | None  # image name and version label
    date: str  # YYYY-MM-DD: when it was prepared (its verification), else when the label was made

    def qr_svg(self) -> str:
        """The QR code of the asset id, as an SVG data URI (black on white, a 2-module quiet zone)."""
        return str(segno.make(self.asset_id, error="m").svg_data_uri(scale=4, border=2))


_NOISE = re.compile(r"\((?:R|TM|r|tm)\)|\bCPU\b|@|\s+with\b.*$")


def short_cpu(model: str | None) -> str | None:
    """A CPU as it fits a label: ``Intel(R) Core(TM) i5-7500 CPU @ 3.40GHz`` -> ``Intel Core i5-7500 3.40GHz``."""
    if not model:
        return None
    return " ".join(_NOISE.sub(" ", model).split()) or None


def _last_prepared(store: CertificateStore, runs: list[Run]) -> tuple[Run | None, str | None, float | None]:
    """The last run and, of the last run whose image was read back complete, its image and when."""
    for run in reversed(runs):
        imaging = imaging_of(store, run)
        if imaging is not None and imaging.complete:
            verified = [v for v in store.verifications(run.id) if v.complete]
            return run, f"{run.image} {run.label}", verified[-1].recorded_at if verified else run.started
    return (runs[-1] if runs else None), None, None


def label_of(store: CertificateStore, mac: str, *, now: float | None = None) -> Label:
    """The label of machine ``mac`` from its records (NothingToCertify when the server does not know it)."""
    machine = store.machine(mac)
    if machine is None:
        raise NothingToCertify(f"no machine {mac} in the server's records", mac=mac)
    run, image, when = _last_prepared(store, store.runs(mac))
    summary = machine_summary(store, machine, run)
    maker_model = " ".join(p for p in (summary.vendor, summary.model) if p) or None
    stamp = when if when is not None else (time.time() if now is None else now)
    return Label(
        asset_id=summary.asset_id, mac=mac, maker_model=maker_model, cpu=short_cpu(summary.cpu),
        ram_mb=summary.ram_mb, disk_gb=summary.disk_gb, disk_transport=tuple(summary.disk_transport), image=image,
        date=time.strftime("%Y-%m-%d", time.gmtime(stamp)),
    )  # fmt: skip


def labels_of(store: CertificateStore, macs: Iterable[str], *, now: float | None = None) -> list[Label]:
    return [label_of(store, mac, now=now) for mac in macs]


def labels_html(labels: list[Label], *, lang: str, sheet: Sheet | None = A4_3X8) -> str:
    """Labels as HTML: on A4 sheets of ``sheet`` (None: one label per page of the label's own size)."""
    grid = sheet or Sheet(columns=1, rows=1, top_mm=0.0)
    pages = [labels[i : i + grid.per_page] for i in range(0, len(labels), grid.per_page)]
    return render(
        "labels.html", lang, pages=pages, grid=grid, on_sheet=sheet is not None,
        disk=lambda label: _disk(label, lang), ram=lambda label: memory(label.ram_mb, lang) if label.ram_mb else None,
    )  # fmt: skip


def _disk(label: Label, lang: str) -> str | None:
    if label.disk_gb is None:
        return None
    kinds = ", ".join(label.disk_transport)
    return f"{size(label.disk_gb * 10**9, lang)}{f' {kinds}' if kinds else ''}"
