"""Inline SVG charts rendered on the server: axes with ticks and gridlines on every chart. Text goes
through html.escape; numbers are formatted here, so nothing user-supplied reaches the markup raw."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

LEFT, RIGHT, TOP, BOTTOM = 76, 16, 14, 34


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (1, 2, 5 x 10^n steps)."""
    if not math.isfinite(low) or not math.isfinite(high):
        return []
    if high <= low:
        high = low + (abs(low) * 0.01 or 1.0)
    raw = (high - low) / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _fmt(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:,.1f}"
    if abs(value) >= 1:
        return f"{value:,.2f}"
    return f"{value:.4g}"


def time_ticks(start: float, end: float, count: int = 5) -> list[float]:
    if end <= start:
        return [start]
    return [start + (end - start) * i / (count - 1) for i in range(count)]


def _time_label(ts: float, span: float) -> str:
    when = datetime.fromtimestamp(ts, UTC)
    return f"{when:%m-%d %H:%M}" if span > 3 * 86400 or span < 86400 else f"{when:%d %H:%M}"


class Frame:
    """The plot area of a chart: scales, gridlines and tick labels."""

    def __init__(self, xs: Sequence[float], ys: Sequence[float], width: int, height: int, *, time_axis: bool = True):
        self.width, self.height = width, height
        self.x0, self.x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
        if self.x1 == self.x0:
            self.x1 = self.x0 + 1
        ys_low, ys_high = (min(ys), max(ys)) if ys else (0.0, 1.0)
        pad = (ys_high - ys_low) * 0.05 or (abs(ys_high) * 0.01 or 1.0)
        self.yticks = nice_ticks(ys_low - pad, ys_high + pad)
        self.y0 = min([ys_low - pad, *self.yticks[:1]])
        self.y1 = max([ys_high + pad, *self.yticks[-1:]])
        self.time_axis = time_axis

    def x(self, value: float) -> float:
        return LEFT + (value - self.x0) / (self.x1 - self.x0) * (self.width - LEFT - RIGHT)

    def y(self, value: float) -> float:
        return self.height - BOTTOM - (value - self.y0) / (self.y1 - self.y0) * (self.height - TOP - BOTTOM)

    def axes(self, unit: str = "") -> str:
        parts = []
        for tick in self.yticks:
            y = self.y(tick)
            parts.append(
                f"<line class='grid' x1='{LEFT}' x2='{self.width - RIGHT}' y1='{y:.1f}' y2='{y:.1f}'/>"
                f"<text class='tick' x='{LEFT - 6}' y='{y + 4:.1f}' text-anchor='end'>{html.escape(_fmt(tick) + unit)}</text>"
            )
        span = self.x1 - self.x0
        for tick in time_ticks(self.x0, self.x1):
            x = self.x(tick)
            label = _time_label(tick, span) if self.time_axis else _fmt(tick)
            parts.append(
                f"<line class='grid' x1='{x:.1f}' x2='{x:.1f}' y1='{TOP}' y2='{self.height - BOTTOM}'/>"
                f"<text class='tick' x='{x:.1f}' y='{self.height - BOTTOM + 16}' text-anchor='middle'>{html.escape(label)}</text>"
            )
        parts.append(
            f"<line class='axis' x1='{LEFT}' x2='{LEFT}' y1='{TOP}' y2='{self.height - BOTTOM}'/>"
            f"<line class='axis' x1='{LEFT}' x2='{self.width - RIGHT}' y1='{self.height - BOTTOM}' y2='{self.height - BOTTOM}'/>"
        )
        return "".join(parts)


def _svg(chart_id: str, title: str, width: int, height: int, body: str) -> str:
    return (
        f"<svg id='{html.escape(chart_id)}' class='chart' viewBox='0 0 {width} {height}' width='{width}' "
        f"height='{height}' role='img' aria-label='{html.escape(title)}'><title>{html.escape(title)}</title>"
        f"<style>.grid{{stroke:#e5e7eb;stroke-width:1}}.axis{{stroke:#6b7280}}.tick{{font:11px system-ui,sans-serif;"
        f"fill:#4b5563}}</style>{body}</svg>"
    )


def line_chart(
    points: Sequence[tuple[datetime, float]],
    *,
    chart_id: str,
    title: str,
    unit: str = "",
    colour: str = "#2563eb",
    width: int = 720,
    height: int = 240,
    markers: Sequence[dict[str, Any]] = (),
) -> str:
    """A time series with axes; `markers` are points {time, value, colour, shape: up|down|dot, label}."""
    if not points:
        return f"<p class='muted'>{html.escape(title)}: no data yet.</p>"
    xs = [p[0].timestamp() for p in points] + [m["time"].timestamp() for m in markers]
    ys = [float(p[1]) for p in points] + [float(m["value"]) for m in markers]
    frame = Frame(xs, ys, width, height)
    path = " ".join(f"{frame.x(p[0].timestamp()):.1f},{frame.y(float(p[1])):.1f}" for p in points)
    body = [frame.axes(unit), f"<polyline points='{path}' fill='none' stroke='{colour}' stroke-width='1.8'/>"]
    for marker in markers:
        x, y = frame.x(marker["time"].timestamp()), frame.y(float(marker["value"]))
        colour_m = marker.get("colour", "#111")
        label = html.escape(str(marker.get("label", "")))
        shape = marker.get("shape", "dot")
        if shape == "up":
            body.append(
                f"<path d='M{x:.1f},{y - 6:.1f} L{x - 5:.1f},{y + 4:.1f} L{x + 5:.1f},{y + 4:.1f} Z' fill='{colour_m}'>"
                f"<title>{label}</title></path>"
            )
        elif shape == "down":
            body.append(
                f"<path d='M{x:.1f},{y + 6:.1f} L{x - 5:.1f},{y - 4:.1f} L{x + 5:.1f},{y - 4:.1f} Z' fill='{colour_m}'>"
                f"<title>{label}</title></path>"
            )
        else:
            body.append(
                f"<circle cx='{x:.1f}' cy='{y:.1f}' r='4' fill='none' stroke='{colour_m}' stroke-width='2'>"
                f"<title>{label}</title></circle>"
            )
    return _svg(chart_id, title, width, height, "".join(body))


def bar_chart(
    bars: Sequence[tuple[str, float]],
    *,
    chart_id: str,
    title: str,
    unit: str = "",
    width: int = 720,
    height: int = 220,
) -> str:
    """Labelled bars (categories on x, values on y; negative bars red) with y gridlines and ticks."""
    if not bars:
        return f"<p class='muted'>{html.escape(title)}: no data yet.</p>"
    values = [float(v) for _, v in bars] + [0.0]
    frame = Frame([0, len(bars)], values, width, height, time_axis=False)
    body = []
    for tick in frame.yticks:
        y = frame.y(tick)
        body.append(
            f"<line class='grid' x1='{LEFT}' x2='{width - RIGHT}' y1='{y:.1f}' y2='{y:.1f}'/>"
            f"<text class='tick' x='{LEFT - 6}' y='{y + 4:.1f}' text-anchor='end'>{html.escape(_fmt(tick) + unit)}</text>"
        )
    slot = (width - LEFT - RIGHT) / len(bars)
    zero = frame.y(0)
    every = max(1, math.ceil(len(bars) / 12))
    for i, (label, value) in enumerate(bars):
        x = LEFT + i * slot + slot * 0.15
        y = frame.y(float(value))
        top, h = min(y, zero), abs(zero - y)
        colour = "#16a34a" if value >= 0 else "#dc2626"
        body.append(
            f"<rect x='{x:.1f}' y='{top:.1f}' width='{slot * 0.7:.1f}' height='{max(h, 0.5):.1f}' fill='{colour}'>"
            f"<title>{html.escape(label)}: {html.escape(_fmt(float(value)) + unit)}</title></rect>"
        )
        if i % every == 0:
            body.append(
                f"<text class='tick' x='{x + slot * 0.35:.1f}' y='{height - BOTTOM + 16}' text-anchor='middle'>"
                f"{html.escape(label)}</text>"
            )
    body.append(
        f"<line class='axis' x1='{LEFT}' x2='{LEFT}' y1='{TOP}' y2='{height - BOTTOM}'/>"
        f"<line class='axis' x1='{LEFT}' x2='{width - RIGHT}' y1='{zero:.1f}' y2='{zero:.1f}'/>"
    )
    return _svg(chart_id, title, width, height, "".join(body))
