"""The certificate's HTML in French and English: every drive's facts stated plainly, text from machines escaped,
no certificate that states a failed erasure; the label sheet's grid."""

from __future__ import annotations

import html as markup
import re
from dataclasses import replace

import pytest

from provision.certificates.labels import A4_3X8, Label, labels_html
from provision.certificates.model import Certificate, CertifiedDrive
from provision.certificates.render import batch_html, certificate_html
from provision.certificates.strings import LANGUAGES, memory, moment, size, texts
from provision.wire.erasure import HiddenAreas, Skipped, Verification
from tests.support.certificates import (
    NVME_SERIAL,
    SATA_SERIAL,
    batch,
    certificate,
    failed_drive,
    machine,
    nvme_drive,
    sata_drive,
)

FINGERPRINT = "0123456789abcdef"


def _text(html: str) -> str:
    """The words of a page, as a reader sees them (no style sheet, no tags, entities decoded)."""
    body = html.split("<body>", 1)[-1]
    return " ".join(markup.unescape(re.sub(r"<[^>]+>", " ", body)).split())


@pytest.mark.parametrize(
    ("lang", "words"),
    [("fr", ["Certificat d'effacement des données", "Purge (effacement par la commande du support)",
             "Clear (effacement par écriture)", "relecture complète", "Opérateur marie", "256 Go"]),
     ("en", ["Data erasure certificate", "Purge (the drive's own erase command)", "Clear (overwritten)",
             "full read-back", "Operator marie", "256 GB"])],
)  # fmt: skip
def test_a_certificate_states_each_drive(lang: str, words: list[str]) -> None:
    cert = certificate()
    text = _text(certificate_html(cert, lang=lang, fingerprint=FINGERPRINT))
    for expected in [*words, NVME_SERIAL, SATA_SERIAL, "nvme-sanitize-crypto", "overwrite", "NIST SP 800-88",
                     "nvme-cli 2.4", "hdparm 9.65", "2026-12-06 21:00:42 UTC", cert.id, FINGERPRINT,
                     "provision certificate verify FILE --key workshop.pub", "the drive is frozen", "hostname",
                     "20261201-020000-0123456789ab", "620 / 620", "7XK2L3J"]:  # fmt: skip
        assert expected in text, expected


def test_every_string_exists_in_both_languages() -> None:
    french, english = texts("fr"), texts("en")
    assert set(french) == set(english) and all(french.values()) and all(english.values())
    assert LANGUAGES == ("fr", "en")
    with pytest.raises(ValueError, match="fr or en"):
        texts("de")
    assert size(256_060_514_304, "fr") == "256\u00a0Go" and size(1_500_000_000_000, "en") == "1.5\u00a0TB"
    assert memory(8192, "fr") == "8\u00a0Gio" and memory(1536, "en") == "1.5\u00a0GiB"
    assert moment("2026-12-06T21:00:42Z") == "2026-12-06 21:00:42 UTC"


def test_text_from_machines_is_escaped() -> None:
    hostile = certificate(machine=machine(serial="<script>alert(1)</script>"),
                          drives=[CertifiedDrive(nvme_drive(model="<b>x</b>"), "<i>op</i>")])  # fmt: skip
    html = certificate_html(hostile, lang="en", fingerprint=FINGERPRINT)
    assert "<script>" not in html and "&lt;script&gt;" in html and "<b>x" not in html and "<i>op" not in html


def test_a_failed_erasure_is_never_a_certificate() -> None:
    with pytest.raises(ValueError, match="never states a failed erasure"):
        certificate(drives=[CertifiedDrive(nvme_drive()), CertifiedDrive(failed_drive())])
    imaging_only = certificate(drives=[])
    text = _text(certificate_html(imaging_only, lang="en", fingerprint=FINGERPRINT))
    assert "this certificate states no erasure" in text and "Data erasure certificate" not in text
    assert isinstance(imaging_only, Certificate) and not imaging_only.erased


def test_a_disk_left_out_is_said_in_both_languages() -> None:
    left = certificate(skipped=[Skipped("sdc", "removable USB stick")])
    assert (
        "Drives not erased These drives were not erased; this certificate does not cover them: /dev/sdc: "
        "removable USB stick" in _text(certificate_html(left, lang="en", fingerprint=FINGERPRINT))
    )
    assert "Supports non effacés" in _text(certificate_html(left, lang="fr", fingerprint=FINGERPRINT))
    assert "Supports non effacés" not in _text(certificate_html(certificate(), lang="fr", fingerprint=FINGERPRINT))
    with pytest.raises(ValueError, match="erased no drive"):
        certificate(drives=[], skipped=[Skipped("sdc", "removable")])


def test_a_batch_has_one_row_per_drive() -> None:
    lot = batch(count=3)
    html = batch_html(lot, lang="fr", fingerprint=FINGERPRINT)
    assert html.split("<tbody>")[1].count("<tr>") == 6  # one row per drive
    text = _text(html)
    assert "lot « Banque-2026-12 »" in text and "6 supports effacés sur 3 ordinateurs (3 Purge, 3 Clear)" in text
    assert all(f"poste-{n:02d}" in text for n in range(3))


def test_labels_fill_sheets_of_24() -> None:
    labels = [Label(f"pc-{n}", f"52:54:00:00:00:{n:02x}", None, None, None, None, (), None, "2026-12-06")
              for n in range(25)]  # fmt: skip
    html = labels_html(labels, lang="en")
    assert A4_3X8.per_page == 24 and html.count('<table class="page">') == 2 and html.count('class="label"') == 25
    assert "size: A4" in html and "70.0mm" in html and "37.0mm" in html
    single = labels_html(labels[:1], lang="fr", sheet=None)
    assert "size: 70.0mm 37.0mm" in single and "Disque inconnu" in _text(single)


@pytest.mark.parametrize(
    ("lang", "internal", "removable"),
    [("fr", "les supports de stockage internes de cet ordinateur ont été effacés",
      "les supports amovibles listés plus bas n'ont pas été effacés"),
     ("en", "the internal storage drives of this computer were erased",
      "the removable media listed below were not erased")],
)  # fmt: skip
def test_with_a_drive_left_out_the_intro_says_only_the_internal_ones_were_erased(
    lang: str, internal: str, removable: str
) -> None:
    left = certificate(skipped=[Skipped("sdc", "removable USB stick")])
    text = _text(certificate_html(left, lang=lang, fingerprint=FINGERPRINT))
    assert internal in text and removable in text
    whole = _text(certificate_html(certificate(), lang=lang, fingerprint=FINGERPRINT))
    assert internal not in whole and removable not in whole  # nothing left out: every drive, as before
    lot = batch(count=2)
    lot = replace(lot, machines=[lot.machines[0], replace(lot.machines[1], skipped=[Skipped("sdc", "USB")])])
    text = _text(batch_html(lot, lang=lang, fingerprint=FINGERPRINT))
    assert removable in text and ("chaque support de stockage interne" if lang == "fr" else "every internal") in text
    assert removable not in _text(batch_html(batch(count=2), lang=lang, fingerprint=FINGERPRINT))


def test_a_batch_row_marks_its_notes_as_the_machine_certificate_states_them() -> None:
    noted = nvme_drive(
        verification=Verification(method="sample", pattern="changed", ok=True, bytes_checked=1 << 30, samples=1024,
                                  note="the drive held almost no data: nothing to compare with"),
        hidden_areas=HiddenAreas(hpa=True, hpa_sectors=2048, dco=False),
    )  # fmt: skip
    cert = certificate(drives=[CertifiedDrive(noted, "marie"), CertifiedDrive(sata_drive(), "marie")])
    lot = replace(batch(count=1), machines=[cert])
    html = batch_html(lot, lang="en", fingerprint=FINGERPRINT)
    rows = _text(html.split("<tbody>")[1].split("</tbody>")[0])
    assert "passed (sampled read-back) [1] [2]" in rows and "passed (full read-back) [3]" in rows
    notes = _text(html.split("</tbody>")[1])
    assert (
        f"[1] poste-a1b2c3 · /dev/nvme0n1 · Serial number {NVME_SERIAL}: Verification: the drive held almost " in notes
    )
    assert (
        "[2] poste-a1b2c3 · /dev/nvme0n1" in notes
        and "hidden area left in place, not erased: HPA 2048 sectors" in notes
    )
    assert f"[3] poste-a1b2c3 · /dev/sda · Serial number {SATA_SERIAL}: Why not stronger: the drive is frozen" in notes
    french = _text(batch_html(lot, lang="fr", fingerprint=FINGERPRINT))
    assert "zone cachée laissée en place, non effacée : HPA 2048 secteurs" in french
    removed = replace(noted, hidden_areas=HiddenAreas(hpa=True, hpa_sectors=2048, removed=True))
    cert = certificate(drives=[CertifiedDrive(removed, "marie")])
    assert "left in place" not in batch_html(replace(lot, machines=[cert]), lang="en", fingerprint=FINGERPRINT)
