"""Server-side SVG charts: round tick values covering the data, gridlines and ticks on every chart,
labels escaped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from phoenix95.replay import charts


def test_ticks_are_round_and_cover_the_range() -> None:
    assert charts.nice_ticks(0, 100) == [0, 20, 40, 60, 80, 100]
    assert charts.nice_ticks(1.13, 1.22) == [1.14, 1.16, 1.18, 1.2, 1.22]
    ticks = charts.nice_ticks(9_700, 10_350)
    assert ticks[0] >= 9_700 and ticks[-1] <= 10_350 and len(ticks) >= 3
    assert charts.nice_ticks(5, 5)  # a flat series still gets an axis


def test_line_and_bar_charts_have_axes_gridlines_and_escaped_labels() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    points = [(start + timedelta(hours=i), 100 + i) for i in range(10)]
    marker = {"time": start, "value": 100, "colour": "#16a34a", "shape": "up", "label": "<b>entry</b>"}
    svg = charts.line_chart(points, chart_id="c", title="<t>", markers=[marker])
    assert svg.count("class='grid'") >= 8 and svg.count("class='tick'") >= 8
    assert "<b>" not in svg and "&lt;b&gt;entry&lt;/b&gt;" in svg and "&lt;t&gt;" in svg
    bars = charts.bar_chart([("<x>", 1.5), ("y", -2.0)], chart_id="b", title="bars")
    assert "&lt;x&gt;" in bars and "fill='#dc2626'" in bars and "class='grid'" in bars
    assert "no data" in charts.line_chart([], chart_id="e", title="empty")
