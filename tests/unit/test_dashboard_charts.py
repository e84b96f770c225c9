"""The report page's bar charts: placed rows, the longest bar for the largest value, a value above 0 never
invisible, nothing drawn for 0 (provision.dashboard.charts)."""

from __future__ import annotations

from provision.dashboard.charts import BAR_SPACE, ROW, bar_chart


def test_bars_are_placed_and_scaled() -> None:
    chart = bar_chart("k", "Title", [("a", 10, "10"), ("b", 5, "5"), ("c", 0, "0"), ("d", 0.001, "0")])
    assert [b.y for b in chart.bars] == [0, ROW, 2 * ROW, 3 * ROW] and chart.height == 4 * ROW
    assert [b.width for b in chart.bars] == [BAR_SPACE, BAR_SPACE // 2, 0, 1]
    assert chart.bars[0].value_x == BAR_SPACE + 6 and chart.bars[1].bar_y == ROW + 20


def test_an_empty_chart_keeps_a_row() -> None:
    chart = bar_chart("k", "Title", [])
    assert chart.bars == () and chart.height == ROW
    assert [b.width for b in bar_chart("z", "T", [("a", 0, "0")]).bars] == [0]
