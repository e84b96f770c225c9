"""The dashboard's view models over a real store: stages, tile numbers of the session, progress with rate and
ETA, reasons, the machine page's runs, verification and hooks, and the tile template's escaping."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import jinja2
import pytest
from aiohttp import web

from provision.dashboard.i18n import translations
from provision.dashboard.pages import machine_page
from provision.dashboard.render import SESSION_KEY, context, setup_templates
from provision.dashboard.views import STAGE_ICONS, Progress, Session, Stage, Views, maker_name
from provision.states import MachineState, RunState
from provision.store import Store
from provision.store.users import Session as LoginSession
from provision.wire.api import VerificationReport
from provision.wire.hooks import HookResult

DIGEST = "ab" * 32
A, B, C = "52:54:00:00:00:0a", "52:54:00:00:00:0b", "52:54:00:00:00:0c"
HOSTILE = "<script>alert('x')</script>&"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "state.sqlite") as s:
        yield s


def views(store: Store, hours: float = 12.0) -> Views:
    return Views(store, None, Session(hours))


def imaging(store: Store, mac: str, **facts: object) -> str:
    store.issue_token(mac, "ipxe", 3600)
    return store.create_run(mac, recipe="default", image="educ", label="L1", digest=DIGEST, facts=dict(facts)).id


def test_tiles_are_numbered_in_arrival_order_and_keep_their_numbers(store: Store) -> None:
    for mac in (B, A):
        store.issue_token(mac, "ipxe", 3600)
    first = {t.mac: t.number for t in views(store).rack()}
    assert first == {B: 1, A: 2}
    store.issue_token(C, "ipxe", 3600)
    store.issue_token(B, "ipxe", 3600)  # a PC booting again keeps its number
    assert {t.mac: t.number for t in views(store).rack()} == {B: 1, A: 2, C: 3}


def test_the_session_window_leaves_out_machines_not_seen_for_hours(store: Store) -> None:
    store.issue_token(A, "ipxe", 3600)
    assert [t.mac for t in views(store).rack(now=time.time() + 3 * 3600)] == [A]
    assert views(store, hours=2).rack(now=time.time() + 3 * 3600) == []


def test_stages_follow_the_run(store: Store) -> None:
    run = imaging(store, A, model="OptiPlex 7010", maker="Dell", form_factor="desktop", firmware="uefi", ram_mb=8192)
    v = views(store)
    [tile] = v.rack()
    assert (tile.stage, tile.vendor, tile.model) == (Stage.INVENTORY, "Dell", "OptiPlex 7010")
    assert (tile.hardware.form_factor, tile.hardware.ram_mb) == ("desktop", 8192)
    store.set_run_state(run, RunState.WRITING)
    store.event(A, "progress", {"run": run, "stage": "writing", "bytes_done": 25, "bytes_total": 100, "rate": 5.0})
    [tile] = v.rack()
    assert tile.stage is Stage.WRITING and tile.progress == Progress("writing", 25, 100, 5.0)
    assert (tile.progress.percent, tile.progress.eta) == (25, 15.0)
    assert tile.word == "writing" and tile.icon
    store.set_run_state(run, RunState.FAILED, "AmbiguousTarget: several disks qualify (vda 1 GB, vdb 2 GB)")
    [tile] = v.rack()
    assert tile.stage is Stage.FAILED and tile.progress is None and tile.final
    assert tile.reason is not None and tile.reason.code == "disk-several"


def test_a_failed_machine_booting_again_is_booting(store: Store) -> None:
    run = imaging(store, A)
    store.set_run_state(run, RunState.FAILED, "superseded by run x")
    time.sleep(0.01)
    store.issue_token(A, "ipxe", 3600)
    assert views(store).rack()[0].stage is Stage.BOOTING


def test_repair_and_waiting_show_their_reasons(store: Store) -> None:
    store.issue_token(A, "ipxe", 3600)
    store.set_state(A, MachineState.REPAIR, "reallocated sectors 312 > 5", recipe="uefi-desktop")
    store.issue_token(B, "ipxe", 3600)
    store.set_state(B, MachineState.WAITING, "no recipe matches and there is no default")
    tiles = {t.mac: t for t in views(store).rack()}
    repair, waiting = tiles[A].reason, tiles[B].reason
    assert tiles[A].stage is Stage.REPAIR and repair is not None
    assert repair.render(translations("en").gettext) == ("disk has 312 reallocated sectors", "replace the disk")
    assert tiles[B].stage is Stage.WAITING and waiting is not None and waiting.code == "no-recipe"


def test_a_pc_silent_after_its_boot_script_has_no_network(store: Store) -> None:
    store.issue_token(A, "ipxe", 3600)
    [tile] = views(store).rack(now=time.time() + 600)
    assert tile.stage is Stage.BOOTING and tile.reason is not None and tile.reason.code == "no-network"
    assert views(store).rack()[0].reason is None  # just booted: not yet


def test_machine_page_has_runs_verification_and_hooks(store: Store) -> None:
    run = imaging(store, A, vendor=HOSTILE)
    store.set_run_state(run, RunState.WRITING)
    store.set_run_state(run, RunState.VERIFYING)
    report = VerificationReport(DIGEST, 3, 3, True, 100, 1.0, 100.0, wipe_method="BLKZEROOUT")
    store.record_verification(run, report)
    store.set_run_state(run, RunState.HOOKS)
    store.record_hook(run, 0, "target", "warn", HookResult("locale", 2, False, 0.5, HOSTILE, len(HOSTILE)))
    store.set_run_state(run, RunState.DONE, "done with warnings: hook locale failed with exit status 2: x")
    page = machine_page(views(store), A, None)
    assert page is not None
    [shown] = page.runs
    assert shown.stage is Stage.DONE and shown.verifications[0].complete
    assert (shown.hooks[0].result, shown.hooks[0].output) == ("failed", HOSTILE)
    assert page.tile.warnings and page.tile.reason is not None and page.tile.reason.code == "hook-exit"
    said = page.tile.reason.render(translations("en").gettext)
    assert said == ("step locale failed (code 2)", "see the machine page")
    assert ("vendor", HOSTILE) in page.facts
    assert page.recipe.problem == "this server has no recipes"
    assert page.events[0].kind == "run"  # newest first
    assert machine_page(views(store), B, None) is None

    env = setup_templates(web.Application())
    html = env.get_template("machine.html").render(context(FakeRequest(f"/machines/{A}"), "en", m=page, tile=page.tile))  # type: ignore[arg-type]
    assert "<script>" not in html and html.count("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;") >= 2
    assert "Step locale: failed (code 2)" in html and "BLKZEROOUT" in html and "3 / 3" in html
    # nobody logged in: no form, a link to log in; logged in: each action a form with the session's CSRF token
    assert "<form" not in html.split("<main", 1)[1] and f'href="/login?next=/machines/{A.replace(":", "%3A")}"' in html
    session = LoginSession("alice", "T0KEN-csrf", 0.0, 1.0)
    logged = FakeRequest(f"/machines/{A}", {SESSION_KEY: session}, {"done": "reimage"})
    html = env.get_template("machine.html").render(context(logged, "fr", m=page, tile=page.tile))  # type: ignore[arg-type]
    for action in ("actions/reimage", "actions/forget", "hooks/locale/rerun", "/logout"):
        assert f'action="/machines/{A}/{action}"' in html or f'action="{action}"' in html, action
    assert html.count('name="csrf" value="T0KEN-csrf"') >= 4 and "Connecté : alice" in html
    assert "Fait : la machine sera de nouveau imagée" in html


def test_the_tile_template_escapes_what_machines_report(store: Store) -> None:
    imaging(store, A, maker=HOSTILE, model=HOSTILE)
    store.set_state(A, MachineState.REPAIR, HOSTILE)
    app = web.Application()
    env = setup_templates(app)
    assert env.autoescape is True
    [tile] = views(store).rack()

    html = env.get_template("tile.html").render(context(FakeRequest("/"), "fr", tile=tile))  # type: ignore[arg-type]
    assert "<script>" not in html and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;" in html
    assert "réparation" in html and "problème inattendu" in html


def test_templates_refuse_undefined_names() -> None:
    env = setup_templates(web.Application())
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ nothing }}").render()


def test_first_events_since_reads_the_window_only(store: Store) -> None:
    for i, mac in enumerate((A, B, A, C)):
        store._db.execute("INSERT INTO events (mac, at, kind, detail) VALUES (?, ?, 'x', '{}')", (mac, 100.0 + i))
    assert store.first_events_since(101.0) == {B: 101.0, A: 102.0, C: 103.0}
    assert store.first_events_since(0) == {A: 100.0, B: 101.0, C: 103.0}
    assert store.first_events_since(103.5) == {}
    assert [e.mac for e in store.events_after(2)] == [A, C] and store.last_event_id() == 4


class FakeRequest(dict[str, object]):
    """What the templates' context reads of a request: its path (decoded and as sent), its query, what
    middlewares put in it."""

    def __init__(self, path: str, values: dict[str, object] | None = None, query: dict[str, str] | None = None):
        super().__init__(values or {})
        self.path = self.raw_path = path
        self.query = query or {}


def test_the_live_feed_takes_a_bounded_number_of_streams(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    import contextlib

    from provision.dashboard import live

    monkeypatch.setattr(live, "MAX_LISTENERS", 3)

    async def scenario() -> list[bool]:
        feed = live.Feed(store, interval=0.05)
        seen = []
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(3):
                seen.append(feed.full)
                await stack.enter_async_context(feed.listen())
            seen.append(feed.full)
        seen.append(feed.full)
        feed_task = feed._task
        if feed_task is not None:
            feed_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feed_task
        return seen

    assert asyncio.run(scenario()) == [False, False, False, True, False]


@pytest.mark.skipif(shutil.which("fc-list") is None, reason="fc-list missing (Debian package fontconfig)")
def test_every_stage_icon_is_in_the_style_sheets_font() -> None:
    """A tile's icon drawn as an empty box on a Debian wall screen (seen in the browser test's screenshot:
    booting's U+23FB) says nothing: each icon is a glyph of DejaVu Sans (fonts-dejavu-core, scripts/setup)."""
    for stage, icon in STAGE_ICONS.items():
        argv = ["fc-list", f":family=DejaVu Sans:charset={ord(icon):x}", "family"]
        fonts = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout
        assert fonts.strip(), f"{stage.value}: {icon!r} (U+{ord(icon):04X}) is not in DejaVu Sans"


def test_a_tile_names_the_maker_as_people_write_it() -> None:
    """The fact ``maker`` is a lower-case key for recipes ("hp"); a tile said "hp Compaq 8000" (the browser
    test's screenshot). A known maker gets its name, another one the DMI vendor as reported."""
    assert maker_name({"maker": "hp", "vendor": "Hewlett-Packard"}, None) == "HP"
    assert maker_name({"maker": "dell", "vendor": "Dell Inc."}, "Dell Inc.") == "Dell"
    assert maker_name({"maker": "gigabyte", "vendor": "Gigabyte Technology Co., Ltd."}, None) == (
        "Gigabyte Technology Co., Ltd."
    )
    assert maker_name({}, "Weakco") == "Weakco"
    assert maker_name({"maker": "weakco"}, None) == "weakco"
    assert maker_name({}, None) is None


def test_a_finished_stage_has_no_time_left() -> None:
    assert Progress("writing", 50, 100, 10.0).eta == 5.0
    assert Progress("verifying", 100, 100, 10.0).eta is None and Progress("writing", 1, 100, 0.0).eta is None


def erase_only_run(store: Store, mac: str) -> str:
    store.issue_token(mac, "ipxe", 3600)
    plan = {"erase": {"method": "auto", "only": True}}
    return store.create_run(mac, recipe="parts", image="", label="", digest="", plan=plan, erase_only=True).id


def test_an_erasing_tile_shows_its_drives_progress_and_a_failed_erasure_its_drive(store: Store) -> None:
    from provision.erasing import Erasing
    from provision.wire.erasure import ErasureProgress
    from tests.support.erasures import drive, report

    run = erase_only_run(store, A)
    eraser = Erasing(store, lambda run_id, token, remote: store.run(run_id))  # type: ignore[arg-type, return-value]
    eraser.progress(run, ErasureProgress("t" * 32, {"sda": 0.5, "sdb": 0.25, "sdc": None}))
    [tile] = views(store).rack()
    assert (tile.stage, tile.word, tile.icon) == (Stage.ERASING, "erasing", STAGE_ICONS[Stage.ERASING])
    assert tile.progress is not None and (tile.progress.percent, tile.progress.eta) == (37, None)
    assert translations("fr").gettext(tile.word) == "effacement"
    bad = drive("sdb", ok=False, verified=False, serial="WD-WCC4N7654321")
    eraser.report(run, report("t" * 32, drive("sda"), bad))
    [tile] = views(store).rack()
    assert tile.stage is Stage.REPAIR and [r.code for r in tile.reasons] == ["erase-verify-failed", "erased"]
    assert tile.reasons[0].render(translations("en").gettext) == (
        "drive sdb (serial WD-WCC4N7654321) still holds data after its erasure",
        "set the drive aside: replace it or destroy it",
    )

    page = machine_page(views(store), A, None)
    assert page is not None and page.erasure is not None and not page.erasure.ok
    assert [(d.device, d.ok) for d in page.erasure.drives] == [("sda", True), ("sdb", False)]
    env = setup_templates(web.Application())
    html = env.get_template("machine.html").render(context(FakeRequest(f"/machines/{A}"), "fr", m=page, tile=page.tile))  # type: ignore[arg-type]
    assert 'id="h-erasure"' in html and "WD-WCC4N7654321" in html and "ata-security-erase-enhanced" in html
    assert "Purge" in html and "effacement seul" in html


def test_an_erased_pc_powered_off_stays_done(store: Store) -> None:
    from tests.support.erasures import drive, report

    run = erase_only_run(store, A)
    store.record_erasure(run, report("t" * 32, drive("sda")), None)
    store.set_run_state(run, RunState.ERASING)
    store.set_run_state(run, RunState.DONE, "1 drive erased and verified (sda: purge)")
    store.local_boot(A, via="ipxe", action="off")
    [tile] = views(store).rack()
    assert tile.stage is Stage.DONE and tile.reasons == ()


def test_the_pcs_own_screen_says_effacement_while_erasing(store: Store) -> None:
    from provision.dashboard.screen import screen_of

    erase_only_run(store, A)
    store.set_run_state(store.runs(A)[-1].id, RunState.ERASING)
    screen = screen_of(views(store), A)
    assert screen is not None and (screen.stage, screen.word, screen.tile) == ("erasing", "effacement", 1)
