"""The dashboard's catalogues: every message of its code and templates has a French translation (and an entry in
the English catalogue), placeholders agree, the language is chosen as documented; the style sheet's colour
pairs meet WCAG AA contrast."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir

from provision.dashboard import i18n
from provision.dashboard.i18n import Formats, accepted, catalog, choose, translations
from provision.dashboard.reasons import messages
from provision.dashboard.views import FORM_WORDS, STAGE_WORDS
from tests.support.paths import REPO

PACKAGE = REPO / "provision" / "dashboard"


def extracted() -> set[str | tuple[str, str]]:
    """Every msgid of the package, as pybabel extract finds it (babel.cfg's mapping, keyword N_ added)."""
    method_map = [("**.py", "python"), ("**/templates/**.html", "jinja2")]
    keywords = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None}
    found: set[str | tuple[str, str]] = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(PACKAGE), method_map, {"**/templates/**.html": {"trimmed": "true"}}, keywords=keywords
    ):
        found.add(message if isinstance(message, str) else (message[0], message[1]))
    return found


def test_every_message_has_a_french_translation() -> None:
    fr, en = catalog("fr"), catalog("en")
    wanted = extracted()
    assert len(wanted) > 100
    assert set(messages()) <= wanted and set(STAGE_WORDS.values()) <= wanted and set(FORM_WORDS.values()) <= wanted
    for msgid in wanted:
        key = msgid[0] if isinstance(msgid, tuple) else msgid
        entry = fr.get(key)
        assert entry is not None, f"not in fr.po: {msgid!r}"
        assert not entry.fuzzy, f"fuzzy in fr.po: {msgid!r}"
        strings = entry.string if isinstance(entry.string, tuple) else (entry.string,)
        assert all(isinstance(s, str) and s.strip() for s in strings), f"no French for {msgid!r}"
        assert en.get(key) is not None, f"not in en.po: {msgid!r}"


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_catalogues_check_clean(lang: str) -> None:
    """Babel's checks: python-format placeholders of each translation match its msgid; nothing obsolete."""
    problems = [(m.id, [str(e) for e in errors]) for m, errors in catalog(lang).check()]
    assert problems == []
    assert not catalog(lang).obsolete


def test_translations_compile_and_translate() -> None:
    assert translations("fr").gettext("done") == "terminé"
    assert translations("en").gettext("done") == "done"
    one, many = "%(num)s machine seen in the last %(hours)s hours", "%(num)s machines seen in the last %(hours)s hours"
    assert translations("fr").ngettext(one, many, 3).startswith("%(num)s machines vues")
    with pytest.raises(ValueError, match="no dashboard language"):
        translations("de")


@pytest.mark.parametrize(
    ("query", "cookie", "header", "lang"),
    [
        (None, None, None, "fr"),
        ("en", "fr", "fr", "en"),
        (None, "en", "fr-FR", "en"),
        ("xx", None, "de-DE, en-GB;q=0.8, fr;q=0.5", "en"),
        (None, "xx", "en;q=0, fr;q=0.1", "fr"),
        (None, None, "de, es;q=bad", "fr"),
    ],
)
def test_language_choice(query: str | None, cookie: str | None, header: str | None, lang: str) -> None:
    assert choose(query, cookie, header) == lang


def test_accept_language_order() -> None:
    assert accepted("fr-CH, fr;q=0.9, en;q=0.8, de;q=0.7, *;q=0.5") == ["fr", "fr", "en", "de", "*"]


def test_formats() -> None:
    assert Formats("fr").size(1_500_000_000) == "1,5\u00a0Go"
    assert Formats("en").size(1_500_000_000) == "1.5\u00a0GB"
    assert Formats("en").rate(52_428_800) == "52.4\u00a0MB/s"
    assert Formats("en").duration(125) == "2 minutes"
    assert Formats("fr").duration(3 * 3600) == "3\u00a0heures"


# ---------------------------------------------------------------------------------------------- contrast
def _luminance(colour: str) -> float:
    rgb = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_any_finite_figure_an_agent_reports_is_shown(lang: str) -> None:
    """A rate of 1e300 B/s (valid on the wire) once made every page with its tile a 500 (Babel's quantize)."""
    f = Formats(lang)
    assert f.rate(1e300).startswith("1E288")
    assert f.number(float("nan")) == "\u2013" == f.number(float("inf"))
    assert f.size(2**63).endswith("B" if lang == "en" else "o") and f.number(-1e20).startswith("-1E20")
    assert f.duration(1e300) == f.duration(float("inf")) == f.duration(i18n.LONGEST)


def test_stage_colours_meet_wcag_aa() -> None:
    css = (PACKAGE / "static" / "dashboard.css").read_text()
    colours = dict(re.findall(r"--([\w-]+):\s*(#[0-9a-fA-F]{6})", css))
    pairs = [(f"{s}-fg", f"{s}-bg") for s in STAGE_WORDS]
    pairs += [(fg, bg) for fg in ("fg", "muted", "link") for bg in ("bg", "panel")]
    for fg, bg in pairs:
        assert contrast(colours[fg], colours[bg]) >= 4.5, (fg, bg)


def test_no_compiled_catalogue_in_the_tree() -> None:
    """The .po files are compiled at load time: a stale .mo could never shadow them."""
    assert not list(Path(PACKAGE).rglob("*.mo"))
