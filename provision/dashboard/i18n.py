"""The dashboard's languages: French by default, and English, from standard gettext catalogues.

The catalogues are the ``.po`` files under ``provision/dashboard/locale/<lang>/LC_MESSAGES/messages.po``
(package data: a wheel carries them). They are compiled in memory with Babel when first used (``read_po`` then
``write_mo``), so neither a checkout nor an installed wheel needs a compile step, and no ``.mo`` file is kept
in the repository. The msgids are the English texts: the English catalogue may leave a msgstr empty.

Which language a browser gets (``choose``): ``?lang=fr|en`` (the link on every page, which also sets the
``lang`` cookie), else the ``lang`` cookie, else the first language of ``Accept-Language`` the dashboard has,
else French. Numbers and dates are formatted by Babel for that language.
"""

from __future__ import annotations

import functools
import gettext
import io
import math
from datetime import date, datetime, timedelta
from importlib import resources

from babel import Locale
from babel.dates import format_date, format_datetime, format_timedelta
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal, format_percent, format_scientific

LANGUAGES = ("fr", "en")
DEFAULT = "fr"
COOKIE = "lang"
DOMAIN = "messages"
LARGEST_FIXED = 1e15  # above, numbers are shown in scientific notation (Formats.number)
LONGEST = 100 * 365 * 86400.0  # a longer duration is shown as this one (Formats.duration)


def po_text(lang: str) -> str:
    """The ``.po`` file of ``lang``, from the package (checkout or wheel)."""
    path = resources.files(__package__ or "provision.dashboard") / "locale" / lang / "LC_MESSAGES" / f"{DOMAIN}.po"
    return path.read_text(encoding="utf-8")


def catalog(lang: str) -> Catalog:
    """The parsed catalogue of ``lang`` (Babel's ``Catalog``)."""
    return read_po(io.StringIO(po_text(lang)), locale=lang, domain=DOMAIN)


@functools.cache
def translations(lang: str) -> gettext.NullTranslations:
    """The compiled translations of ``lang`` (one of LANGUAGES), made once per process."""
    if lang not in LANGUAGES:
        raise ValueError(f"no dashboard language {lang!r}")
    buffer = io.BytesIO()
    write_mo(buffer, catalog(lang), use_fuzzy=False)
    buffer.seek(0)
    return gettext.GNUTranslations(buffer)


def choose(query: str | None, cookie: str | None, accept_language: str | None) -> str:
    """The language of a request: the query's ``lang``, the cookie, Accept-Language, else French."""
    for wanted in (query, cookie):
        if wanted in LANGUAGES:
            return wanted
    for lang in accepted(accept_language or ""):
        if lang in LANGUAGES:
            return lang
    return DEFAULT


def accepted(header: str) -> list[str]:
    """The primary language tags of an Accept-Language header, by quality (``q=0`` left out)."""
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate(header.split(",")[:32]):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                quality = float(params[2:])
            except ValueError:
                quality = 0.0
        primary = tag.strip().split("-")[0].lower()
        if primary and quality > 0:
            ranked.append((-quality, position, primary))
    return [tag for _, _, tag in sorted(ranked)]


class Formats:
    """Numbers, sizes, rates, durations and dates in one language (Babel's locale data)."""

    def __init__(self, lang: str) -> None:
        self.lang = lang
        self.locale = Locale.parse(lang)

    def number(self, value: float, digits: int = 0) -> str:
        """``value`` rounded to ``digits`` decimals; beyond what a person counts (an agent may report any finite
        figure: a rate of 1e300 B/s), in scientific notation, which Babel's fixed-point quantizing cannot hold."""
        if not math.isfinite(value) or abs(value) >= LARGEST_FIXED:
            return format_scientific(value, format="0.##E0", locale=self.locale) if math.isfinite(value) else "\u2013"
        return format_decimal(round(value, digits), format=f"#,##0.{'0' * digits}" if digits else "#,##0",
                              locale=self.locale)  # fmt: skip

    def size(self, count: float) -> str:
        """Bytes in the units a person reads: ``1,5 Go`` / ``1.5 GB`` (powers of 1000)."""
        units = ("B", "kB", "MB", "GB", "TB") if self.lang != "fr" else ("o", "ko", "Mo", "Go", "To")
        value, unit = float(count), 0
        while value >= 1000 and unit < len(units) - 1:
            value, unit = value / 1000, unit + 1
        return f"{self.number(value, 0 if unit == 0 or value >= 100 else 1)}\u00a0{units[unit]}"

    def percent(self, fraction: float) -> str:
        """``0.875`` as ``87,5 %`` / ``87.5%`` (to a tenth of a percent), in the language's own pattern."""
        return format_percent(round(fraction, 3), locale=self.locale, decimal_quantization=False)

    def day(self, day: date) -> str:
        """A date, long: ``7 décembre 2026`` / ``December 7, 2026``."""
        return format_date(day, format="long", locale=self.locale)

    def rate(self, per_second: float) -> str:
        return f"{self.size(per_second)}/s"

    def duration(self, seconds: float) -> str:
        """``3 minutes``, ``1 hour``: rounded as a person says it."""
        seconds = min(max(seconds, 1.0), LONGEST) if math.isfinite(seconds) else LONGEST  # timedelta's own bound
        return format_timedelta(timedelta(seconds=seconds), threshold=1.1, locale=self.locale)

    def when(self, timestamp: float) -> str:
        """A moment in the server's time zone, short: ``6 déc. 2026, 20:15``."""
        moment = datetime.fromtimestamp(timestamp).astimezone()
        return format_datetime(moment, format="medium", tzinfo=moment.tzinfo, locale=self.locale)
