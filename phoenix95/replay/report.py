"""A self-contained HTML report of a replay: summary, equity curve, drawdown, per-symbol table and the
list of trades. Charts are inline SVG: no script, no network, it opens offline."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from phoenix95.domain.positions import Position

WIDTH, HEIGHT, PAD = 960, 280, 44
MAX_TRADES = 1000


def _scale(values: Sequence[float], size: float, pad: float, invert: bool = False) -> list[float]:
    low, high = min(values), max(values)
    spread = (high - low) or 1.0
    scaled = [pad + (v - low) / spread * (size - 2 * pad) for v in values]
    return [size - v for v in scaled] if invert else scaled


def _chart(
    points: Sequence[tuple[datetime, float]], *, title: str, colour: str, fill: bool = False, unit: str = ""
) -> str:
    if len(points) < 2:
        return f"<p class='muted'>{html.escape(title)}: not enough points to draw.</p>"
    xs = _scale([p[0].timestamp() for p in points], WIDTH, PAD)
    ys = _scale([p[1] for p in points], HEIGHT, PAD, invert=True)
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
    low, high = min(p[1] for p in points), max(p[1] for p in points)
    area = ""
    if fill:
        area = f"<polygon points='{xs[0]:.1f},{PAD:.1f} {path} {xs[-1]:.1f},{PAD:.1f}' fill='{colour}' fill-opacity='0.18'/>"
    labels = (
        f"<text x='{PAD}' y='{PAD - 10}' class='axis'>{high:,.2f}{unit}</text>"
        f"<text x='{PAD}' y='{HEIGHT - 12}' class='axis'>{low:,.2f}{unit}</text>"
        f"<text x='{PAD}' y='{HEIGHT - 26}' class='axis'>{points[0][0]:%Y-%m-%d %H:%M}</text>"
        f"<text x='{WIDTH - PAD}' y='{HEIGHT - 26}' class='axis' text-anchor='end'>{points[-1][0]:%Y-%m-%d %H:%M}</text>"
    )
    return (
        f"<figure><figcaption>{html.escape(title)}</figcaption>"
        f"<svg id='{title.lower().replace(' ', '-')}' viewBox='0 0 {WIDTH} {HEIGHT}' width='{WIDTH}' height='{HEIGHT}' role='img'>"
        f"<rect x='0' y='0' width='{WIDTH}' height='{HEIGHT}' fill='#fff' stroke='#ddd'/>{area}"
        f"<polyline points='{path}' fill='none' stroke='{colour}' stroke-width='2'/>{labels}</svg></figure>"
    )


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


def render(
    summary: dict[str, Any], curve: Sequence[tuple[datetime, Decimal]], closed: Sequence[Position], *, title: str
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
        )
        for p in sorted(closed, key=lambda p: p.opened_at)[:MAX_TRADES]
    ]
    rejected = sorted(summary.get("rejected_by_reason", {}).items(), key=lambda item: -item[1])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body{{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1000px}}
h1{{font-size:22px}} h2{{font-size:17px;margin-top:28px}} figure{{margin:12px 0}} figcaption{{font-weight:600;margin-bottom:4px}}
table{{border-collapse:collapse;margin:8px 0}} td,th{{border:1px solid #ddd;padding:3px 8px;text-align:right}}
th{{background:#f5f5f5}} td:first-child,th:first-child{{text-align:left}} .axis{{font-size:11px;fill:#666}} .muted{{color:#888}}
</style></head><body>
<h1>{html.escape(title)}</h1>
<h2>Summary</h2>{_table(("figure", "value"), stats)}
{_chart(equity_points, title="Equity curve", colour="#1f77b4", unit=" USDT")}
{_chart(_drawdown(curve), title="Drawdown", colour="#d62728", fill=True, unit=" %")}
<h2>Per symbol</h2>{_table(("symbol", "trades", "win rate", "PnL"), symbols)}
<h2>Rejections</h2>{_table(("reason", "signals"), rejected)}
<h2>Trades ({len(closed)}{", first " + str(MAX_TRADES) if len(closed) > MAX_TRADES else ""})</h2>
{_table(("symbol", "side", "opened", "closed", "entry", "exit", "quantity", "close", "PnL"), trades)}
<p class="muted">Generated by Phoenix95 `p95 replay`. Money in USDT; PnL net of fees and funding.</p>
</body></html>
"""
