"""Bar charts for the report page, drawn on the server as SVG by the template (``report.html``): this module
only places the bars (pure geometry, no markup), so every text the chart shows goes through the template's
escaping and translation.

A chart is horizontal bars, one row each: the label above its bar, the value after it; each bar carries a
``<title>`` with its label and value (a tooltip, and what a screen reader says), and the chart a title of its
own (``role="img"``). The page also shows the same numbers in tables: the chart is never the only way to read
them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

WIDTH = 640  # the SVG's view box, in its own units (the style sheet scales it to the page)
BAR_SPACE = 520  # the longest bar; the rest is for its value
ROW = 40  # one bar and its label
LABEL_CHARS = 90  # a longer label is cut (…) on the chart (the template); its <title> and the tables keep it whole


@dataclass(frozen=True)
class Bar:
    label: str  # as given (the template translates it when it is a msgid)
    value: float
    shown: str  # the value as the page writes it
    y: int  # the top of its row
    width: int  # the bar's length (at least 1 for a value above 0, so it is seen)

    @property
    def label_y(self) -> int:
        return self.y + 14

    @property
    def bar_y(self) -> int:
        return self.y + 20

    @property
    def value_x(self) -> int:
        return self.width + 6


@dataclass(frozen=True)
class Chart:
    key: str  # an id for the page (its title's id: "chart-KEY")
    title: str  # a msgid
    bars: tuple[Bar, ...]
    translate: bool = False  # the labels are msgids (stage words), not recorded text

    @property
    def height(self) -> int:
        return max(len(self.bars), 1) * ROW

    @property
    def width(self) -> int:
        return WIDTH


def bar_chart(key: str, title: str, items: Sequence[tuple[str, float, str]], *, translate: bool = False) -> Chart:
    """A chart of ``(label, value, shown)`` rows, in their order; the longest bar is the largest value."""
    top = max((value for _, value, _ in items), default=0)
    bars = tuple(
        Bar(label, value, shown, i * ROW, 0 if value <= 0 or top <= 0 else max(1, round(BAR_SPACE * value / top)))
        for i, (label, value, shown) in enumerate(items)
    )
    return Chart(key, title, bars, translate)
