"""Certificates and labels from the dashboard, behind a login (docs/certificates.md):

- ``GET /machines/{mac}/certificate.pdf`` and ``.json``: a machine's certificate, issued now (a new id, signed
  by the server's key, a ``certificate`` event), in the request's language; ``/machines/{mac}/label.pdf``: its
  label (70 x 37 mm);
- ``GET /lots/{lot}``: a donor's delivery: its machines, with links to ``/lots/{lot}/certificate.pdf`` and
  ``.json`` (the batch certificate, every drive of the lot) and ``/lots/{lot}/labels.pdf`` (A4 sheets of 3 x 8);
- ``GET /dashboard/labels.pdf``: the label sheet of the rack (the machines of the current session).

Reading the rack needs no login; a certificate is a document the workshop signs and a lot names a donor, so
these need one (the 401 page says to log in).
A machine whose erasure failed gets no certificate: the 409 page names the drive and why. The routes' names start
with "dashboard": their errors are pages (provision.web.errors).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from aiohttp import web

from provision.certificates.gather import gather, gather_lot, lot_macs, record_issued
from provision.certificates.labels import A4_3X8, Sheet, labels_html, labels_of
from provision.certificates.model import AnyCertificate, Certificate
from provision.certificates.render import batch_html, certificate_html, pdf
from provision.certificates.signing import document_bytes, load_or_create_key, sign
from provision.dashboard.render import DASHBOARD, SESSION_KEY, language, page
from provision.errors import NotFound, Unauthorized
from provision.macaddr import BadMac, normalize_mac
from provision.store import Store

log = logging.getLogger(__name__)

MACHINE_CERTIFICATE = "/machines/{mac}/certificate.{format}"
MACHINE_LABEL = "/machines/{mac}/label.pdf"
LOT = "/lots/{lot}"
LOT_CERTIFICATE = "/lots/{lot}/certificate.{format}"
LOT_LABELS = "/lots/{lot}/labels.pdf"
RACK_LABELS = "/dashboard/labels.pdf"
FORMATS = ("pdf", "json")


@dataclass(frozen=True)
class Issuer:
    """Who signs: the key file (config ``certificates.key``) and the workshop's name (``certificates.workshop``)."""

    key_path: Path
    workshop: str


ISSUER: web.AppKey[Issuer] = web.AppKey("certificates_issuer", Issuer)


def lot_path(lot: str) -> str:
    return "/lots/" + quote(lot, safe="")


def _logged_in(request: web.Request) -> None:
    if request.get(SESSION_KEY) is None:
        raise Unauthorized("log in to see lots and to download certificates and labels")


def _mac(request: web.Request) -> str:
    try:
        return normalize_mac(request.match_info["mac"])
    except BadMac as exc:
        raise NotFound(f"no machine {request.match_info['mac'][:40]!r}") from exc


def _format(request: web.Request) -> str:
    found = request.match_info["format"]
    if found not in FORMATS:
        raise NotFound(f"certificates are .pdf or .json, not .{found[:16]}")
    return found


def _answer(data: bytes, kind: str, name: str) -> web.Response:
    response = web.Response(body=data, content_type=kind)
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Cache-Control"] = "no-store"
    return response


def _issued(store: Store, issuer: Issuer, found: AnyCertificate, form: str, lang: str) -> bytes:
    """Sign, record and render one certificate (in a worker thread: SQLite, Ed25519, WeasyPrint)."""
    key = load_or_create_key(issuer.key_path)
    record_issued(store, found, key.public.fingerprint)
    if form == "json":
        return document_bytes(sign(found, key))
    fingerprint = key.public.fingerprint
    if isinstance(found, Certificate):
        return pdf(certificate_html(found, lang=lang, fingerprint=fingerprint))
    return pdf(batch_html(found, lang=lang, fingerprint=fingerprint))


async def machine_certificate(request: web.Request) -> web.Response:
    _logged_in(request)
    mac, form, lang = _mac(request), _format(request), language(request)
    store, issuer = request.app[DASHBOARD].views.store, request.app[ISSUER]

    def make() -> bytes:
        return _issued(store, issuer, gather(store, mac, workshop=issuer.workshop), form, lang)

    data = await asyncio.to_thread(make)
    log.info("%s: certificate (%s, %s) downloaded from the dashboard by %s", mac, form, lang, request.remote)
    kind = "application/pdf" if form == "pdf" else "application/json"
    return _answer(data, kind, f"certificate-{mac.replace(':', '-')}.{form}")


async def lot_certificate(request: web.Request) -> web.Response:
    _logged_in(request)
    lot, form, lang = request.match_info["lot"], _format(request), language(request)
    store, issuer = request.app[DASHBOARD].views.store, request.app[ISSUER]

    def make() -> bytes:
        return _issued(store, issuer, gather_lot(store, lot, workshop=issuer.workshop), form, lang)

    data = await asyncio.to_thread(make)
    kind = "application/pdf" if form == "pdf" else "application/json"
    return _answer(data, kind, f"lot-{quote(lot, safe='')[:80]}.{form}")


async def _labels(request: web.Request, macs: list[str], sheet: Sheet | None, name: str) -> web.Response:
    store, lang = request.app[DASHBOARD].views.store, language(request)

    def make() -> bytes:
        return pdf(labels_html(labels_of(store, macs), lang=lang, sheet=sheet))

    return _answer(await asyncio.to_thread(make), "application/pdf", name)


async def machine_label(request: web.Request) -> web.Response:
    _logged_in(request)
    mac = _mac(request)
    return await _labels(request, [mac], None, f"label-{mac.replace(':', '-')}.pdf")


async def lot_labels(request: web.Request) -> web.Response:
    _logged_in(request)
    lot = request.match_info["lot"]
    macs = await asyncio.to_thread(lot_macs, request.app[DASHBOARD].views.store, lot)
    if not macs:
        raise NotFound(f"no machine in lot {lot[:128]!r}")
    return await _labels(request, macs, A4_3X8, f"labels-{quote(lot, safe='')[:80]}.pdf")


async def rack_labels(request: web.Request) -> web.Response:
    _logged_in(request)
    views = request.app[DASHBOARD].views
    members = await asyncio.to_thread(views.session.members, views.store)
    if not members:
        raise NotFound("no machine in the rack's current session")
    return await _labels(request, [m.mac for m in members], A4_3X8, "labels-rack.pdf")


async def lot_page(request: web.Request) -> web.Response:
    _logged_in(request)  # a lot names a donor: not for whoever walks past the rack's screen
    lot = request.match_info["lot"]
    views = request.app[DASHBOARD].views
    machines = await asyncio.to_thread(lot_macs, views.store, lot)
    tiles = [t for t in (await asyncio.to_thread(lambda: [views.tile_of(m) for m in machines])) if t is not None]
    return page(request, "lot.html", {"lot": lot, "tiles": tiles, "lot_url": lot_path(lot)})


def add_downloads(app: web.Application, issuer: Issuer) -> None:
    """The certificate and label routes on the dashboard's ``app``."""
    app[ISSUER] = issuer
    app.router.add_get(MACHINE_CERTIFICATE, machine_certificate, name="dashboard-certificate")
    app.router.add_get(MACHINE_LABEL, machine_label, name="dashboard-label")
    app.router.add_get(LOT, lot_page, name="dashboard-lot")
    app.router.add_get(LOT_CERTIFICATE, lot_certificate, name="dashboard-lot-certificate")
    app.router.add_get(LOT_LABELS, lot_labels, name="dashboard-lot-labels")
    app.router.add_get(RACK_LABELS, rack_labels, name="dashboard-rack-labels")
