"""Certificates and labels through the real command line (``python -m provision``) and the real tools: the PDF
certificate and label sheet rendered by WeasyPrint, their text read back with poppler's ``pdftotext`` (drive
serials, methods, NIST categories, French and English); ``provision certificate verify`` on a good file, a
tampered one and against another key; no certificate for a machine whose erasure failed.

The first page of one certificate and of one label sheet are kept as PNG (``pdftoppm -png -r 80``) under
``$PROVISION_ARTIFACTS/certificates/`` (default ``tests/artifacts/certificates/``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from provision.certificates.signing import document_bytes
from provision.store import Store
from tests.support.certificates import seed
from tests.support.erasures import drive
from tests.support.paths import ARTIFACTS, REPO

pytestmark = pytest.mark.skipif(not shutil.which("pdftotext") or not shutil.which("pdftoppm"),
                                reason="poppler-utils (pdftotext, pdftoppm) not installed")  # fmt: skip

SHOTS = ARTIFACTS / "certificates"
MAC, OTHER, FAILED = "52:54:00:12:34:56", "52:54:00:12:34:57", "52:54:00:12:34:58"
LOT = "Assurances-2026-12"


@pytest.fixture
def state(tmp_path: Path) -> Path:
    folder = tmp_path / "state"
    with Store(folder / "provision.db") as store:
        seed(store, MAC, drive("nvme0n1", method="nvme-sanitize-crypto", serial="S4EWNX0N111111"),
             drive("sda", method="overwrite", serial="WD-WCC4N2222222"), lot=LOT, hostname="poste-a1")  # fmt: skip
        seed(store, OTHER, drive("sda", method="ata-security-erase-enhanced", serial="Z1D3333333"), lot=LOT,
             image=False)  # fmt: skip
        seed(store, FAILED, drive("sda", ok=False, verified=False, serial="BAD4444444"), verified=False)
    return folder


def provision(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(cwd)}
    return subprocess.run([sys.executable, "-m", "provision", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip


def pdf_text(path: Path) -> str:
    text = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True).stdout
    return " ".join(text.split())


def keep_first_page(pdf: Path, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    prefix = SHOTS / name
    subprocess.run(["pdftoppm", "-png", "-r", "80", "-f", "1", "-l", "1", "-singlefile", str(pdf), str(prefix)],
                   check=True)  # fmt: skip
    png = prefix.with_suffix(".png")
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 10_000
    return png


@pytest.mark.parametrize(
    ("lang", "words"),
    [("fr", ["Certificat d'effacement des données", "Purge (effacement par la commande du support)",
             "Clear (effacement par écriture)", "Catégorie NIST SP 800-88", "Numéro de série", "Opérateur"]),
     ("en", ["Data erasure certificate", "Purge (the drive's own erase command)", "Clear (overwritten)",
             "NIST SP 800-88 category", "Serial number", "Operator"])],
)  # fmt: skip
def test_pdf_certificate_states_every_drive(state: Path, tmp_path: Path, lang: str, words: list[str]) -> None:
    out = tmp_path / f"certificate-{lang}.pdf"
    done = provision("certificate", "show", MAC, "--lang", lang, "--format", "pdf", "--out", str(out),
                     "--state-dir", str(state), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert out.read_bytes().startswith(b"%PDF-")
    text = pdf_text(out)
    for expected in [*words, "S4EWNX0N111111", "WD-WCC4N2222222", "nvme-sanitize-crypto", "overwrite", "poste-a1",
                     LOT, MAC, "provision certificate verify FILE --key workshop.pub"]:  # fmt: skip
        assert expected in text, expected
    signed = json.loads(out.with_suffix(".json").read_bytes())  # the same certificate, signed, beside the PDF
    assert signed["certificate"]["id"] in text and signed["signature"]["key"] in text
    if lang == "fr":
        keep_first_page(out, "certificate-fr")


def test_verify_a_good_a_tampered_and_another_keys_certificate(state: Path, tmp_path: Path) -> None:
    where = ("--state-dir", str(state))
    key = provision("certificate", "key", *where, cwd=tmp_path)
    assert key.returncode == 0 and "BEGIN PUBLIC KEY" in key.stdout
    fingerprint = key.stdout.split("fingerprint ")[1].split()[0]
    (tmp_path / "workshop.pub").write_text(key.stdout)
    shown = provision("certificate", "show", MAC, "--out", "cert.json", *where, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    good = tmp_path / "cert.json"
    cert_id = json.loads(good.read_bytes())["certificate"]["id"]

    ok = provision("certificate", "verify", str(good), "--key", "workshop.pub", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == f"valid: certificate {cert_id} for {MAC}, 2 drives, signed by {fingerprint}\n"
    assert provision("certificate", "verify", str(good), *where, cwd=tmp_path).returncode == 0  # the server's key

    tampered = tmp_path / "tampered.json"
    tampered.write_bytes(good.read_bytes().replace(b"WD-WCC4N2222222", b"WD-WCC4N2222223"))
    bad = provision("certificate", "verify", str(tampered), "--key", "workshop.pub", cwd=tmp_path)
    assert bad.returncode == 1 and "changed after it was signed" in bad.stderr and bad.stdout == ""

    document = json.loads(good.read_bytes())
    del document["certificate"]["drives"][0]
    tampered.write_bytes(document_bytes(document))
    assert provision("certificate", "verify", str(tampered), "--key", "workshop.pub", cwd=tmp_path).returncode == 1

    other = provision("certificate", "key", "--line", "--state-dir", str(tmp_path / "other"), cwd=tmp_path)
    (tmp_path / "other.pub").write_text(other.stdout)
    refused = provision("certificate", "verify", str(good), "--key", "other.pub", cwd=tmp_path)
    assert refused.returncode == 1 and f"signed by key {fingerprint}, not by the key given" in refused.stderr


def test_no_certificate_for_a_failed_erasure(state: Path, tmp_path: Path) -> None:
    done = provision("certificate", "show", FAILED, "--format", "pdf", "--out", "x.pdf", "--state-dir", str(state),
                     cwd=tmp_path)  # fmt: skip
    assert done.returncode == 1 and "no certificate of erasure" in done.stderr and "BAD4444444" in done.stderr
    assert not (tmp_path / "x.pdf").exists() and not (tmp_path / "x.json").exists()
    with Store(state / "provision.db") as store:
        assert not store.events(FAILED, "certificate")


@pytest.mark.parametrize("form", ["pdf", "html"])
def test_a_page_whose_json_would_overwrite_it_is_refused(state: Path, tmp_path: Path, form: str) -> None:
    (tmp_path / "cert.json").write_bytes(b"kept")
    done = provision("certificate", "show", MAC, "--format", form, "--out", "cert.json", "--state-dir", str(state),
                     cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert "--out cert.json" in done.stderr and "beside the page as cert.json" in done.stderr
    assert (tmp_path / "cert.json").read_bytes() == b"kept"  # neither the JSON nor the page written over it
    with Store(state / "provision.db") as store:
        assert not store.events(MAC, "certificate")  # refused before anything was issued


def test_batch_certificate_and_label_sheet_of_a_lot(state: Path, tmp_path: Path) -> None:
    where = ("--state-dir", str(state))
    batch = provision("certificate", "batch", LOT, "--lang", "en", "--format", "pdf", "--out", "lot.pdf", *where,
                      cwd=tmp_path)  # fmt: skip
    assert batch.returncode == 0, batch.stderr
    text = pdf_text(tmp_path / "lot.pdf")
    for expected in ["Batch data erasure certificate", LOT, "S4EWNX0N111111", "WD-WCC4N2222222", "Z1D3333333",
                     "ata-security-erase-enhanced", "3 drives erased on 2 computers (2 Purge, 1 Clear)"]:  # fmt: skip
        assert expected in text, expected
    verified = provision("certificate", "verify", "lot.json", *where, cwd=tmp_path)
    assert verified.returncode == 0 and f"lot {LOT}, 2 machines, 3 drives" in verified.stdout

    labels = provision("labels", "--lot", LOT, "--out", "labels.pdf", *where, cwd=tmp_path)
    assert labels.returncode == 0, labels.stderr
    text = pdf_text(tmp_path / "labels.pdf")
    assert "poste-a1" in text and OTHER in text and "Intel Core i5-7500 3.40GHz" in text and "8 Gio" in text
    keep_first_page(tmp_path / "labels.pdf", "labels-sheet")
    one = provision("labels", MAC, "--single", "--lang", "en", "--out", "one.pdf", *where, cwd=tmp_path)
    assert one.returncode == 0 and "Memory 8 GiB" in pdf_text(tmp_path / "one.pdf")
    assert provision("labels", *where, cwd=tmp_path).returncode == 2  # neither MACs nor a lot
