"""Certificates and labels as HTML (print CSS, A4) and PDF (WeasyPrint), in French or English.

The templates are package data (``provision/certificates/templates/*.html``), rendered by jinja2 with
autoescape: every string a machine or a drive reported is text, never markup. Their words come from
``provision.certificates.strings`` (one place for both languages).
"""

from __future__ import annotations

import functools
import html
import logging
from typing import Any

import jinja2
from markupsafe import Markup

from provision.certificates.model import BatchCertificate, Certificate, CertifiedDrive
from provision.certificates.strings import memory, moment, size, texts
from provision.wire.erasure import DriveErasure

log = logging.getLogger(__name__)

VERIFY_COMMAND = "provision certificate verify FILE --key workshop.pub"


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("provision.certificates", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["moment"] = moment
    env.filters["css_string"] = css_string
    return env


def css_string(text: str) -> Markup:
    """Text as a quoted CSS string (a page footer's ``content``): anything but plain letters, digits and a few
    marks is a CSS escape, so no quote, backslash or ``</style>`` from a lot's name ends the string. The text
    comes from a template block, HTML-escaped by autoescape: it is unescaped first."""
    plain = " -_.:/()"
    body = "".join(c if c.isalnum() or c in plain else f"\\{ord(c):x} " for c in html.unescape(str(text)))
    return Markup(f'"{body}"')  # noqa: S704 - every character escaped above  # nosec B704


def render(template: str, lang: str, **context: Any) -> str:
    """A template of this package in ``lang``, with its strings (``t``) and formats."""
    t = texts(lang)
    formats = {"size": lambda n: size(n, lang), "memory": lambda n: memory(n, lang)}
    template_ = environment().get_template(template)
    return template_.render(t=t, lang=lang, verify_command=VERIFY_COMMAND, **formats, **context)


def certificate_html(certificate: Certificate, *, lang: str, fingerprint: str) -> str:
    """One machine's certificate as a printable A4 HTML page."""
    return render("certificate.html", lang, c=certificate, fingerprint=fingerprint)


def drive_notes(drive: DriveErasure, lang: str) -> list[str]:
    """What a row of the batch table cannot hold and the machine's certificate states: what the read-back could
    not tell, why not a stronger method, a hidden area (HPA/DCO) left in place, not erased."""
    t = texts(lang)
    notes = []
    if drive.verification is not None and drive.verification.note:
        notes.append(f"{t['verification']}: {drive.verification.note}")
    if drive.fallback:
        notes.append(f"{t['fallback']}: {drive.fallback}")
    hidden = drive.hidden_areas
    if (hidden.hpa or hidden.dco) and not hidden.removed:
        parts = [f"{name} {t['sectors'].format(count='?' if count is None else count)}"
                 for name, found, count in (("HPA", hidden.hpa, hidden.hpa_sectors), ("DCO", hidden.dco,
                                            hidden.dco_sectors)) if found]  # fmt: skip
        notes.append(t["hidden_left"].format(what=", ".join(parts)))
    return notes


def batch_html(batch: BatchCertificate, *, lang: str, fingerprint: str) -> str:
    """A lot's certificate: one table of every drive of the delivery, each row's notes (verification note,
    fallback, hidden area left in place) as numbered marks below the table."""
    drives = batch.drives
    purge = sum(1 for _m, d in drives if d.erasure.category == "purge")
    counts = {"drives": len(drives), "machines": len(batch.machines), "purge": purge, "clear": len(drives) - purge}
    rows: list[tuple[Certificate, CertifiedDrive, list[int]]] = []
    notes: list[tuple[int, Certificate, DriveErasure, str]] = []
    for machine, drive in drives:
        marks: list[int] = []
        for text in drive_notes(drive.erasure, lang):
            notes.append((len(notes) + 1, machine, drive.erasure, text))
            marks.append(len(notes))
        rows.append((machine, drive, marks))
    return render("batch.html", lang, b=batch, rows=rows, notes=notes, counts=counts, fingerprint=fingerprint)


def pdf(html: str) -> bytes:
    """The PDF of a page of this package (its CSS is inline; nothing is fetched from the network)."""
    import weasyprint  # type: ignore[import-untyped]  # imported here: it loads pango, which only the PDF needs
    from weasyprint.urls import URLFetcher  # type: ignore[import-untyped]

    fetcher = URLFetcher(allowed_protocols={"data"}, fail_on_errors=True)  # the QR codes' data: URIs, no network
    document: bytes = weasyprint.HTML(string=html, url_fetcher=fetcher).write_pdf()
    return document
