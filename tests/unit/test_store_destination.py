"""Destinations (issue 18): a recipe's ``destination:`` (checked by the schema), recorded with each run it makes,
and the machine's own, set by an operator (``Store.set_destination``, ``provision machines destination``)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from provision.cli import main
from provision.errors import NotFound
from provision.recipes.schema import Recipe
from provision.states import Destination
from provision.store import Store

MAC = "52:54:00:12:34:56"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "provision.db") as s:
        s.seen(MAC)
        yield s


def test_a_recipe_names_one_of_the_destinations() -> None:
    assert Recipe(name="a", image="x", destination="school").destination is Destination.SCHOOL
    assert Recipe(name="a", image="x").destination is None
    with pytest.raises(ValueError, match="destination"):
        Recipe(name="a", image="x", destination="museum")


def test_a_run_records_its_recipes_destination(store: Store) -> None:
    run = store.create_run(MAC, recipe="r", image="i", label="L", digest="d", destination="family")
    plain = store.create_run(MAC, recipe="r", image="i", label="L", digest="d")
    assert store.run_destination(run.id) == "family" and store.run_destination(plain.id) is None


def test_an_operator_sets_and_clears_a_machines_destination(store: Store) -> None:
    assert store.machine(MAC).destination is None  # type: ignore[union-attr]
    assert store.set_destination(MAC, Destination.ASSOCIATION, "paul").destination == "association"
    assert store.set_destination(MAC, Destination.ASSOCIATION, "paul").destination == "association"  # no event
    assert store.set_destination(MAC, None, "anne").destination is None
    details = [e.detail for e in store.events(MAC, "destination")]
    assert details == [
        {"destination": "association", "by": "paul", "before": None},
        {"destination": None, "by": "anne", "before": "association"},
    ]
    with pytest.raises(NotFound):
        store.set_destination("52:54:00:00:00:01", Destination.SCHOOL, "paul")


def test_the_cli_sets_a_destination(tmp_path: Path, store: Store) -> None:
    out = io.StringIO()
    args = ["machines", "destination", MAC.upper(), "school", "--by", "paul", "--state-dir", str(tmp_path)]
    assert main(args, out) == 0
    assert out.getvalue() == f"{MAC}: destination school (set by paul)\n"
    assert store.machine(MAC).destination == "school"  # type: ignore[union-attr]
    assert main(["machines", "destination", MAC, "-", "--state-dir", str(tmp_path), "--json"], io.StringIO()) == 0
    assert store.machine(MAC).destination is None  # type: ignore[union-attr]
    with pytest.raises(SystemExit) as exited:
        main(["machines", "destination", MAC, "museum", "--state-dir", str(tmp_path)], io.StringIO(), io.StringIO())
    assert exited.value.code == 2


def test_the_hello_records_the_chosen_recipes_destination_with_its_run(store: Store, tmp_path: Path) -> None:
    from provision.facts import load_probe
    from provision.runs import Runs
    from provision.wire.api import Hello
    from tests.support.paths import SAMPLE_PROBE

    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "parts.yaml").write_text("name: parts\ndefault: true\naction: erase\nerase: {method: auto}\n"
                                        "destination: recycling\n")  # fmt: skip
    runs = Runs(store, None, recipes, tmp_path / "probes")
    token = store.issue_token(MAC, "ipxe", ttl=60)
    answer = runs.hello(Hello(MAC, token, facts=load_probe(SAMPLE_PROBE).to_dict()), None)
    assert answer.action == "erase"
    run = store.open_run(MAC)
    assert run is not None and run.erase_only and store.run_destination(run.id) == "recycling"


def test_a_store_of_schema_8_is_migrated_and_reported(tmp_path: Path) -> None:
    """The upgrade path: a database the previous provision left (schema 8, a machine and a run done, with its
    facts) gains the destination columns when opened, keeps its rows, and reports them (destination unknown)."""
    import json
    import sqlite3
    import time

    from provision.store import MIGRATIONS

    path = tmp_path / "provision.db"
    db = sqlite3.connect(path)
    for number, script in enumerate(MIGRATIONS[:8], start=1):
        db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")
    now = time.time()
    db.execute("INSERT INTO machines (mac, state, first_seen, last_seen) VALUES (?, 'done', ?, ?)", (MAC, now, now))
    db.execute(
        "INSERT INTO runs (id, mac, recipe, image, label, digest, state, started, finished, bytes_written, facts) "
        "VALUES ('r1', ?, 'desk', 'educ', 'L1', 'd', 'done', ?, ?, 1000, ?)",
        (MAC, now - 600, now - 60, json.dumps({"form_factor": "laptop"})),
    )
    db.commit()
    db.close()
    out = io.StringIO()
    assert main(["report", "--state-dir", str(tmp_path), "--json", "--by", "destination"], out) == 0
    report = json.loads(out.getvalue())
    assert (report["total"]["imaged"], report["total"]["bytes_written"]) == (1, 1000)
    assert [(g["key"], g["imaged"]) for g in report["groups"]] == [("unknown", 1)]
    with Store(path) as store:
        assert store.schema_version == len(MIGRATIONS) and store.run_destination("r1") is None
        assert store.set_destination(MAC, Destination.SCHOOL, "paul").destination == "school"
    out = io.StringIO()
    assert main(["report", "--state-dir", str(tmp_path), "--json", "--by", "destination"], out) == 0
    assert [(g["key"], g["imaged"]) for g in json.loads(out.getvalue())["groups"]] == [("school", 1)]
