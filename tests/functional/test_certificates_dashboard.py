"""Certificates, labels and lots on the dashboard of a real `provision serve` on 127.0.0.1: every download needs a
login (401 page without one), and so does a lot's page (a lot names a donor); logged in, a machine's PDF
certificate names its drives and the configured workshop,
its JSON verifies against the server's key file, the label and the lot's batch certificate and label sheet are
PDFs; a machine whose erasure failed gets a 409 page naming the drive, never a certificate."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from provision.certificates.model import BatchCertificate, Certificate
from provision.certificates.signing import load_key, verify_bytes
from provision.store import Store
from tests.support.certificates import seed
from tests.support.erasures import drive
from tests.support.serve import Running, start, stop

MAC, OTHER, FAILED = "52:54:00:12:34:56", "52:54:00:12:34:57", "52:54:00:12:34:58"
LOT = "Courtier 2026/12"  # a space and a slash: the lot's links are quoted
LOT_URL = "/lots/Courtier%202026%2F12"
PASSWORD = "correct horse battery"
WORKSHOP = "Atelier Solidaire Lyon"

pytestmark = pytest.mark.skipif(not shutil.which("pdftotext"), reason="poppler-utils (pdftotext) not installed")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Running]:
    with Store(tmp_path / "state" / "provision.db") as store:
        store.add_user("alice", PASSWORD)
        seed(store, MAC, drive("nvme0n1", method="nvme-sanitize-crypto", serial="S4EWNX0N111111"),
             drive("sda", method="overwrite", serial="WD-WCC4N2222222"), lot=LOT)  # fmt: skip
        seed(store, OTHER, drive("sda", serial="Z1D3333333"), lot=LOT, image=False)
        seed(store, FAILED, drive("sda", ok=False, verified=False, serial="BAD4444444"), verified=False)
    config = tmp_path / "provision.yaml"
    config.write_text(f"certificates:\n  workshop: {WORKSHOP}\n")
    run = start(tmp_path, "--config", str(config))
    try:
        yield run
    finally:
        if run.proc.poll() is None:
            stop(run)


def log_in(url: str) -> requests.Session:
    browser = requests.Session()
    form = browser.get(f"{url}/login", timeout=5)
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    answer = browser.post(f"{url}/login", data={"user": "alice", "password": PASSWORD, "csrf": csrf.group(1)},
                          allow_redirects=False, timeout=10)  # fmt: skip
    assert answer.status_code == 303
    return browser


def pdf_text(data: bytes, tmp_path: Path) -> str:
    path = tmp_path / "answer.pdf"
    path.write_bytes(data)
    done = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True)
    return " ".join(done.stdout.split())


DOWNLOADS = [f"/machines/{MAC}/certificate.pdf", f"/machines/{MAC}/certificate.json", f"/machines/{MAC}/label.pdf",
             f"{LOT_URL}/certificate.pdf", f"{LOT_URL}/certificate.json", f"{LOT_URL}/labels.pdf",
             "/dashboard/labels.pdf", LOT_URL]  # fmt: skip


def test_downloads_and_lots_need_a_login(served: Running) -> None:
    for path in DOWNLOADS:
        anonymous = requests.get(f"{served.url}{path}", timeout=10, headers={"Accept": "text/html"})
        assert anonymous.status_code == 401 and "text/html" in anonymous.headers["Content-Type"], path
        assert 'href="/login' in anonymous.text and "La lecture du rack ne demande pas de connexion" in anonymous.text
        assert OTHER not in anonymous.text  # nothing of the lot: not even which machines it holds
    page = requests.get(f"{served.url}/machines/{MAC}", timeout=5)
    assert page.status_code == 200 and "certificate.pdf" not in page.text and "Connectez-vous" in page.text


def test_a_machines_certificate_and_label(served: Running, tmp_path: Path) -> None:
    browser = log_in(served.url)
    page = browser.get(f"{served.url}/machines/{MAC}", timeout=5).text
    assert f"/machines/{MAC}/certificate.pdf" in page and f"/machines/{MAC}/label.pdf" in page
    assert f'action="/machines/{MAC}/actions/lot"' in page
    answer = browser.get(f"{served.url}/machines/{MAC}/certificate.pdf?lang=en", timeout=30)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/pdf"
    assert "attachment" in answer.headers["Content-Disposition"]
    text = pdf_text(answer.content, tmp_path)
    for expected in ["Data erasure certificate", WORKSHOP, "S4EWNX0N111111", "WD-WCC4N2222222", "Purge", "Clear"]:
        assert expected in text, expected
    signed = browser.get(f"{served.url}/machines/{MAC}/certificate.json", timeout=30)
    public = load_key(served.state / "keys" / "certificates_ed25519").public
    verified = verify_bytes(signed.content, public)
    assert isinstance(verified.certificate, Certificate) and verified.certificate.machine.mac == MAC
    assert verified.certificate.workshop.name == WORKSHOP and len(verified.certificate.drives) == 2
    label = browser.get(f"{served.url}/machines/{MAC}/label.pdf", timeout=30)
    assert label.status_code == 200 and MAC in pdf_text(label.content, tmp_path)


def test_a_failed_erasure_gets_a_page_not_a_certificate(served: Running) -> None:
    browser = log_in(served.url)
    for form in ("pdf", "json"):
        refused = browser.get(f"{served.url}/machines/{FAILED}/certificate.{form}", timeout=30)
        assert refused.status_code == 409 and "text/html" in refused.headers["Content-Type"]
        assert "BAD4444444" in refused.text


def test_a_lot_page_batch_certificate_and_label_sheet(served: Running, tmp_path: Path) -> None:
    browser = log_in(served.url)
    page = browser.get(f"{served.url}{LOT_URL}", timeout=10)
    assert page.status_code == 200 and MAC in page.text and OTHER in page.text and FAILED not in page.text
    assert f"{LOT_URL}/certificate.pdf" in page.text and f"{LOT_URL}/labels.pdf" in page.text
    assert f'href="{LOT_URL}?lang=en"' in page.text  # the language switch keeps the lot one path segment
    batch = browser.get(f"{served.url}{LOT_URL}/certificate.json", timeout=30)
    verified = verify_bytes(batch.content, load_key(served.state / "keys" / "certificates_ed25519").public)
    assert isinstance(verified.certificate, BatchCertificate) and len(verified.certificate.drives) == 3
    text = pdf_text(browser.get(f"{served.url}{LOT_URL}/certificate.pdf", timeout=30).content, tmp_path)
    assert "Certificat d'effacement d'un lot" in text and "Z1D3333333" in text and LOT in text
    sheet = browser.get(f"{served.url}{LOT_URL}/labels.pdf", timeout=30)
    assert sheet.status_code == 200 and OTHER in pdf_text(sheet.content, tmp_path)
    assert 'href="/dashboard/labels.pdf"' in browser.get(f"{served.url}/", timeout=10).text
    rack = browser.get(f"{served.url}/dashboard/labels.pdf", timeout=30)
    assert rack.status_code == 200 and FAILED in pdf_text(rack.content, tmp_path)
