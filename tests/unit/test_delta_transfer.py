"""The plan of a machine that holds a version (provision.runs with provision.delta): it names the version and the
prediction, and a small delta fetches by HTTP even when the recipe says multicast; a blank disk, or a delta
near the whole version, keeps the recipe's carousel. A real image store and the server's multicast registry
(its plan only: nothing is sent)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from provision.config import MulticastConfig
from provision.images import ImageStore
from provision.multicast import Multicast
from provision.runs import Runs
from provision.store import Store
from provision.wire.api import ImageAnswer
from tests.support.chunk_server import EXTENTS, SIZE, build_store
from tests.support.delta import CHANGED, done_run, import_v2
from tests.support.images import CHUNK, make_disk

RECIPE = "name: rack\ndefault: true\nimage: educ\ntransfer: multicast\n"


def plan_of(runs: Runs, mac: str) -> ImageAnswer:
    runs.store.seen(mac)
    answer = runs.plan_for(mac, {})
    assert isinstance(answer, ImageAnswer), answer
    return answer


def test_a_small_delta_fetches_by_http_and_a_blank_disk_joins_the_carousel(tmp_path: Path) -> None:
    images, v1, raw = build_store(tmp_path)
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "rack.yaml").write_text(RECIPE)
    other = make_disk(tmp_path / "other.img", SIZE, [(o + 4096, n) for o, n in EXTENTS], seed=9)
    unlike = images.import_raw(other, "educ", chunk_size=CHUNK, created=datetime(2026, 1, 1, tzinfo=UTC))
    with Store(tmp_path / "db.sqlite") as store:
        runs = Runs(store, images, recipes, tmp_path / "probes", multicast=Multicast(images, MulticastConfig()))
        rule = plan_of(runs, "52:54:00:de:17:20").plan.target_disk  # the recipe's target_disk rule, rendered
        done_run(store, "52:54:00:de:17:21", v1, rule)  # holds version 1: a small delta
        done_run(store, "52:54:00:de:17:22", unlike, rule)  # holds a version that shares nothing at the same places
        done_run(store, "52:54:00:de:17:24", v1, {"prefer": "another disk"})  # maybe not that disk
        v2 = import_v2(images, raw)
        small = plan_of(runs, "52:54:00:de:17:21")
        assert small.plan.digest == v2.digest and small.plan.multicast is None
        assert small.plan.held is not None and small.plan.held.digest == v1.digest
        assert small.plan.held.chunks == len(CHANGED)
        [run] = [r for r in store.runs("52:54:00:de:17:21") if r.id == small.run]
        assert (run.held_digest, run.predicted_download) == (v1.digest, small.plan.held.download)
        large = plan_of(runs, "52:54:00:de:17:22")
        assert large.plan.held is not None and large.plan.held.chunks == len(v2.index.chunks) - v2.index.holes
        assert large.plan.multicast is not None  # the recipe's multicast: it needs (nearly) everything
        blank = plan_of(runs, "52:54:00:de:17:23")
        assert blank.plan.held is None and blank.plan.multicast is not None
        assert "held" not in blank.plan.to_dict()
        assert plan_of(runs, "52:54:00:de:17:24").plan.held is None
        again = runs._replayed(store.run(small.run) or run)  # a repeated hello gets the same held
        assert isinstance(again, ImageAnswer) and again.plan.held == small.plan.held


def test_without_an_image_store_nothing_is_held(tmp_path: Path) -> None:
    ImageStore(tmp_path / "images")
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    with Store(tmp_path / "db.sqlite") as store:
        assert Runs(store, None, recipes).deltas is None
