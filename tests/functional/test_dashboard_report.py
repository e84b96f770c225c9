"""The dashboard's /report page of a real ``provision serve`` (127.0.0.1, every port 0) over a store filled through
the Store's own methods (tests.support.reports): behind a login; its figures, tables and SVG bar charts (a
<title> per bar, no script) in French and English; the period and grouping form; CSV and JSON downloads that
parse and say what ``provision report`` says; a bad date or grouping is a 400 page."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from xml.etree import ElementTree

import pytest
import requests

from provision.store import Store
from tests.support.reports import fill
from tests.support.serve import Running, start, stop

PASSWORD = "correct horse battery"
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp_path = tmp_path_factory.mktemp("report")
    with Store(tmp_path / "state" / "provision.db") as store:
        store.add_user("alice", PASSWORD)
        fill(store, tmp_path / "recipes", tmp_path / "probes")
    run = start(tmp_path)
    try:
        yield run
    finally:
        stop(run)


@pytest.fixture(scope="module")
def browser(served: Running) -> requests.Session:
    session = requests.Session()
    form = session.get(f"{served.url}/login", timeout=5)
    found = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert found is not None
    answer = session.post(f"{served.url}/login", data={"user": "alice", "password": PASSWORD,
                          "csrf": found.group(1), "next": "/report"}, allow_redirects=False, timeout=10)  # fmt: skip
    assert answer.status_code == 303, answer.text[:500]
    return session


def charts(html: str) -> dict[str, list[str]]:
    """Each chart's title and its bars' <title> texts, read as XML."""
    found = {}
    for svg in re.findall(r"<svg .*?</svg>", html, re.S):
        root = ElementTree.fromstring(svg)
        title = root.find(f"{SVG}title")
        assert title is not None and root.get("role") == "img"
        found[str(title.text)] = [str(g.find(f"{SVG}title").text) for g in root.iter(f"{SVG}g")]  # type: ignore[union-attr]
    return found


def test_the_report_needs_a_login(served: Running) -> None:
    for path in ("/report", "/report.csv", "/report.json"):
        answer = requests.get(f"{served.url}{path}", params={"lang": "en"}, timeout=5)
        assert answer.status_code == 401 and "Log in" in answer.text, path
    assert 'href="/report"' in requests.get(f"{served.url}/", timeout=5).text  # the navigation links to it


def test_the_page_in_english(served: Running, browser: requests.Session) -> None:
    page = browser.get(f"{served.url}/report", params={"lang": "en", "by": "destination"}, timeout=10)
    assert page.status_code == 200 and '<html lang="en">' in page.text
    html = page.text
    assert "<script" not in html
    row = re.search(r'<th scope="row">All</th>(.*?)</tr>', html, re.S)
    assert row is not None
    cells = re.findall(r"<td>(.*?)</td>", row.group(1))
    assert cells[:8] == ["5", "2", "2", "1", "1", "1", "1", "60%"]
    assert cells[-3:] == ["15.0\u00a0GB", "0\u00a0B", "3"]  # by HTTP (no transfer reported), by multicast
    assert '<th scope="row">association</th>' in html and '<th scope="row">recycling</th>' in html
    found = charts(html)
    assert found["Outcomes"] == ["imaged: 2", "erased only: 1", "failed: 1", "repair: 1", "set aside at start: 1"]
    assert found["Machines imaged by group"] == ["association: 1", "recycling: 0", "school: 1"]
    assert found["Failures by reason"] == ["write failed: I/O error on /dev/sda: 1"]
    assert found["Drives erased by method"] == ["ata-security-erase-enhanced: 2", "nvme-sanitize-crypto: 1"]
    assert 'href="/report.csv?from=' in html and "by=destination" in html
    assert '<option value="destination" selected>' in html


def test_the_page_in_french(served: Running, browser: requests.Session) -> None:
    html = browser.get(f"{served.url}/report", params={"lang": "fr", "by": "destination"}, timeout=10).text
    assert '<html lang="fr">' in html and "Rapport" in html
    assert '<th scope="row">association</th>' in html and '<th scope="row">recyclage</th>' in html
    assert '<th scope="row">école</th>' in html and "<td>60\u00a0%</td>" in html
    found = charts(html)
    assert found["Résultats"] == ["imagées : 2", "effacées seulement : 1", "échec : 1", "réparation : 1",
                                  "mises de côté au départ : 1"]  # fmt: skip
    assert "Pannes par raison" in found and "Disques effacés par méthode" in found


def test_csv_and_json_downloads_parse(served: Running, browser: requests.Session) -> None:
    query = {"from": "2020-01-01", "to": "2100-01-01", "by": "recipe"}
    data = browser.get(f"{served.url}/report.json", params=query, timeout=10)
    assert data.status_code == 200 and data.headers["Content-Type"].startswith("application/json")
    report = data.json()
    assert report["period"] == {"from": "2020-01-01", "to": "2100-01-01"} and report["total"]["imaged"] == 2
    assert {g["key"]: g["imaged"] for g in report["groups"]} == {"desk": 1, "laptop": 1, "parts": 0}
    table = browser.get(f"{served.url}/report.csv", params=query, timeout=10)
    assert table.headers["Content-Type"].startswith("text/csv") and "attachment" in table.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(table.text)))
    value = {(r["group"], r["section"], r["item"]): r["value"] for r in rows}
    assert value[("(all)", "figures", "imaged")] == "2" and value[("desk", "figures", "failed")] == "1"


def test_bad_queries_are_400_pages(served: Running, browser: requests.Session) -> None:
    for query in ({"from": "yesterday"}, {"from": "2026-02-01", "to": "2026-01-01"}, {"by": "colour"}):
        answer = browser.get(f"{served.url}/report", params={"lang": "en", **query}, timeout=10)
        assert answer.status_code == 400 and "<html" in answer.text, query
    assert browser.get(f"{served.url}/report.xml", timeout=10).status_code == 404


def test_the_machine_page_shows_its_destination(served: Running) -> None:
    mine = requests.get(f"{served.url}/machines/52:54:00:00:00:02", params={"lang": "en"}, timeout=10).text
    assert "<dt>Destination</dt><dd>association (set by an operator)</dd>" in mine
    recipes = requests.get(f"{served.url}/machines/52:54:00:00:00:01", params={"lang": "fr"}, timeout=10).text
    assert "<dt>Destination</dt><dd>école (selon sa recette)</dd>" in recipes
    none = requests.get(f"{served.url}/machines/52:54:00:00:00:07", params={"lang": "en"}, timeout=10).text
    assert "<dt>Destination</dt><dd>\u2013</dd>" in none  # a dash: none


def test_an_operator_sets_the_destination_from_the_machine_page(served: Running, browser: requests.Session) -> None:
    mac = "52:54:00:00:00:07"
    page = browser.get(f"{served.url}/machines/{mac}", params={"lang": "en"}, timeout=10).text
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None and 'action="/machines/52:54:00:00:00:07/actions/destination"' in page
    url = f"{served.url}/machines/{mac}/actions/destination"
    assert requests.post(url, data={"csrf": found.group(1), "destination": "school"}, timeout=5).status_code == 401
    forged = browser.post(url, data={"csrf": "forged", "destination": "school"}, allow_redirects=False, timeout=5)
    assert forged.status_code == 403  # logged in, but not this page's form: nothing set (the events below)
    bad = browser.post(url, data={"csrf": found.group(1), "destination": "museum"}, allow_redirects=False, timeout=5)
    assert bad.status_code == 400 and "museum" in bad.text
    done = browser.post(url, data={"csrf": found.group(1), "destination": "family"}, allow_redirects=False, timeout=5)
    assert done.status_code == 303 and done.headers["Location"] == f"/machines/{mac}?done=destination"
    shown = browser.get(f"{served.url}{done.headers['Location']}", params={"lang": "fr"}, timeout=10).text
    assert "la destination de la machine est choisie" in shown
    assert "<dt>Destination</dt><dd>famille (choisie par un opérateur)</dd>" in shown
    assert '<option value="family" selected>' in shown
    events = requests.get(f"{served.url}/api/v1/machines/{mac}/events", timeout=5).json()
    assert [e["detail"] for e in events if e["kind"] == "destination"] == [
        {"destination": "family", "by": "alice", "before": None}
    ]
    cleared = browser.post(url, data={"csrf": found.group(1), "destination": ""}, allow_redirects=False, timeout=5)
    assert cleared.status_code == 303
    assert "<dt>Destination</dt><dd>\u2013</dd>" in browser.get(f"{served.url}/machines/{mac}", timeout=10).text
