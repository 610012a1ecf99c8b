"""A self-contained HTML report of a replay: summary, equity curve, drawdown, the price of each traded
symbol with every entry and exit marked (coloured by outcome), returns by day, per-symbol table and the
list of trades (entry, exit, reason, PnL, ROE). Charts are inline SVG with axes, ticks and gridlines
(replay/charts.py): no script, no network, it opens offline."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from phoenix95.domain.positions import Position
from phoenix95.replay import charts

WIDTH, HEIGHT = 960, 280
MAX_TRADES = 1000
#: Price charts: this many symbols at most, each thinned to about this many points.
MAX_PRICE_CHARTS, PRICE_POINTS = 4, 800
WIN, LOSS = "#16a34a", "#dc2626"


def _drawdown(curve: Sequence[tuple[datetime, Decimal]]) -> list[tuple[datetime, float]]:
    peak = None
    points = []
    for when, equity in curve:
        peak = equity if peak is None or equity > peak else peak
        points.append((when, -float((peak - equity) / peak * 100) if peak else 0.0))
    return points


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _chart(
    points: Sequence[tuple[datetime, float]], *, title: str, colour: str, unit: str = "", markers: Sequence[Any] = ()
) -> str:
    chart_id = title.lower().replace(" ", "-")
    svg = charts.line_chart(
        points, chart_id=chart_id, title=title, unit=unit, colour=colour, width=WIDTH, height=HEIGHT, markers=markers
    )
    return f"<figure><figcaption>{html.escape(title)}</figcaption>{svg}</figure>"


def thin(points: Sequence[tuple[datetime, Decimal]], limit: int = PRICE_POINTS) -> list[tuple[datetime, Decimal]]:
    if len(points) <= limit:
        return list(points)
    step = len(points) / limit
    return [points[int(i * step)] for i in range(limit)] + [points[-1]]


def _price_chart(symbol: str, prices: Sequence[tuple[datetime, Decimal]], trades: Sequence[Position]) -> str:
    markers = []
    for p in trades:
        colour = WIN if p.realized_pnl > 0 else LOSS
        outcome = f"PnL {p.realized_pnl:.2f}"
        markers.append(
            {
                "time": p.opened_at,
                "value": p.entry_price,
                "colour": colour,
                "shape": "up" if p.side == "long" else "down",
                "label": f"{p.side} entry {p.entry_price} ({outcome})",
            }
        )
        if p.closed_at is not None and p.exit_price is not None:
            markers.append(
                {
                    "time": p.closed_at,
                    "value": p.exit_price,
                    "colour": colour,
                    "shape": "dot",
                    "label": f"exit {p.exit_price}: {p.close_reason or p.status} ({outcome})",
                }
            )
    points = [(when, float(price)) for when, price in thin(prices)]
    return _chart(points, title=f"{symbol} price", colour="#475569", markers=markers)


def daily_returns(curve: Sequence[tuple[datetime, Decimal]]) -> list[tuple[str, float]]:
    """(day, return in %) from each day's last equity to the next day's."""
    closes: dict[str, Decimal] = {}
    for when, equity in curve:
        closes[f"{when:%Y-%m-%d}"] = equity
    days = sorted(closes)
    out = []
    previous = curve[0][1] if curve else None
    for day in days:
        if previous:
            out.append((day[5:], float((closes[day] - previous) / previous * 100)))
        previous = closes[day]
    return out


def _roe(p: Position) -> str:
    return f"{p.realized_pnl / p.margin * 100:.2f} %" if p.margin else ""


def render(
    summary: dict[str, Any],
    curve: Sequence[tuple[datetime, Decimal]],
    closed: Sequence[Position],
    *,
    title: str,
    prices: Mapping[str, Sequence[tuple[datetime, Decimal]]] | None = None,
) -> str:
    equity_points = [(when, float(value)) for when, value in curve]
    stats = [
        (key, summary.get(key))
        for key in (
            "events",
            "signals",
            "approved",
            "rejected",
            "orders",
            "trades",
            "win_rate",
            "pnl",
            "fees",
            "funding",
            "final_equity",
            "return",
            "max_drawdown",
            "sharpe",
            "sortino",
            "exposure",
            "average_open_positions",
            "digest",
            "mode",
            "events_per_s",
        )
    ]
    symbols = [
        (symbol, data["trades"], data["win_rate"], data["pnl"])
        for symbol, data in summary.get("pnl_by_symbol", {}).items()
    ]
    trades = [
        (
            p.symbol,
            p.side,
            f"{p.opened_at:%Y-%m-%d %H:%M}",
            f"{p.closed_at:%Y-%m-%d %H:%M}" if p.closed_at else "",
            p.entry_price,
            p.exit_price,
            p.quantity,
            p.close_reason or p.status,
            p.realized_pnl,
            _roe(p),
        )
        for p in sorted(closed, key=lambda p: p.opened_at)[:MAX_TRADES]
    ]
    rejected = sorted(summary.get("rejected_by_reason", {}).items(), key=lambda item: -item[1])
    trips = [
        (trip["at"], trip["reason"], trip.get("subject") or "all trading", trip.get("until") or "-", trip["message"])
        for trip in summary.get("protections", [])
    ]
    by_symbol: dict[str, list[Position]] = {}
    for p in closed:
        by_symbol.setdefault(p.symbol, []).append(p)
    traded = sorted(by_symbol, key=lambda symbol: -len(by_symbol[symbol]))[:MAX_PRICE_CHARTS]
    price_charts = "".join(
        _price_chart(symbol, (prices or {}).get(symbol, ()), by_symbol[symbol]) for symbol in traded if prices
    )
    returns = charts.bar_chart(
        daily_returns(curve), chart_id="returns-by-day", title="Returns by day", unit=" %", width=WIDTH, height=240
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body{{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1000px}}
h1{{font-size:22px}} h2{{font-size:17px;margin-top:28px}} figure{{margin:12px 0}} figcaption{{font-weight:600;margin-bottom:4px}}
table{{border-collapse:collapse;margin:8px 0}} td,th{{border:1px solid #ddd;padding:3px 8px;text-align:right}}
th{{background:#f5f5f5}} td:first-child,th:first-child{{text-align:left}} .muted{{color:#888}} svg{{max-width:100%;height:auto}}
</style></head><body>
<h1>{html.escape(title)}</h1>
<h2>Summary</h2>{_table(("figure", "value"), stats)}
{_chart(equity_points, title="Equity curve", colour="#1f77b4")}
{_chart(_drawdown(curve), title="Drawdown", colour="#d62728", unit=" %")}
<h2>Prices, entries and exits</h2>
<p class="muted">Triangles: entries (up long, down short); circles: exits; green won, red lost.</p>
{price_charts or "<p class='muted'>No closed trades to mark.</p>"}
<h2>Returns by day</h2>{returns}
<h2>Per symbol</h2>{_table(("symbol", "trades", "win rate", "PnL"), symbols)}
<h2>Rejections</h2>{_table(("reason", "signals"), rejected)}
<h2>Protections tripped ({len(trips)})</h2>
{_table(("at", "protection", "on", "locked until", "figures"), trips) if trips else "<p class='muted'>None.</p>"}
<h2>Trades ({len(closed)}{", first " + str(MAX_TRADES) if len(closed) > MAX_TRADES else ""})</h2>
{_table(("symbol", "side", "opened", "closed", "entry", "exit", "quantity", "close", "PnL", "ROE"), trades)}
<p class="muted">Generated by Phoenix95 `p95 replay`. Money in USDT; PnL net of fees and funding.</p>
</body></html>
"""
