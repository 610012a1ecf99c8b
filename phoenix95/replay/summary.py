"""What a replay earned: trades, win rate, PnL, fees, funding, drawdown, Sharpe, Sortino, exposure."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from phoenix95.domain.positions import Position

ZERO = Decimal(0)


def max_drawdown(curve: Sequence[tuple[datetime, Decimal]]) -> Decimal:
    """Largest fall from a peak of the equity curve, as a fraction of that peak."""
    peak = None
    worst = ZERO
    for _, equity in curve:
        peak = equity if peak is None or equity > peak else peak
        if peak and peak > 0:
            worst = max(worst, (peak - equity) / peak)
    return worst


def daily_returns(curve: Sequence[tuple[datetime, Decimal]]) -> list[float]:
    """Returns of end-of-day equity (UTC days, days without a change included)."""
    if len(curve) < 2:
        return []
    closes: dict[datetime, Decimal] = {}
    for when, equity in curve:
        closes[when.replace(hour=0, minute=0, second=0, microsecond=0)] = equity
    days = sorted(closes)
    first, last = days[0], days[-1]
    series = []
    equity = curve[0][1]
    day = first
    while day <= last:
        equity = closes.get(day, equity)
        series.append(float(equity))
        day += timedelta(days=1)
    return [(b - a) / a for a, b in itertools.pairwise(series) if a]


def sharpe(returns: Sequence[float]) -> float | None:
    if len(returns) < 2:
        return None
    mean = sum(returns) / len(returns)
    std = math.sqrt(sum((r - mean) ** 2 for r in returns) / (len(returns) - 1))
    return round(mean / std * math.sqrt(365), 4) if std > 0 else None


def sortino(returns: Sequence[float]) -> float | None:
    if len(returns) < 2:
        return None
    mean = sum(returns) / len(returns)
    downside = [min(0.0, r) ** 2 for r in returns]
    deviation = math.sqrt(sum(downside) / len(returns))
    return round(mean / deviation * math.sqrt(365), 4) if deviation > 0 else None


def time_in_market(intervals: Sequence[tuple[datetime, datetime]]) -> float:
    """Seconds during which at least one of the (start, end) intervals was open (their union)."""
    total = 0.0
    current: tuple[datetime, datetime] | None = None
    for start, end in sorted(intervals):
        if current is None or start > current[1]:
            if current is not None:
                total += (current[1] - current[0]).total_seconds()
            current = (start, end)
        elif end > current[1]:
            current = (current[0], end)
    if current is not None:
        total += (current[1] - current[0]).total_seconds()
    return total


def summarize(
    *,
    closed: Sequence[Position],
    open_positions: Sequence[Position],
    verdicts: Sequence[Any],
    orders: Sequence[Any],
    curve: Sequence[tuple[datetime, Decimal]],
    starting_equity: Decimal,
    first_time: datetime | None,
    last_time: datetime | None,
) -> dict[str, Any]:
    pnl = sum((p.realized_pnl for p in closed), ZERO)
    wins = sum(1 for p in closed if p.realized_pnl > 0)
    fees = sum((p.entry_fee + p.exit_fee for p in closed), ZERO) + sum((p.entry_fee for p in open_positions), ZERO)
    funding = sum((p.funding_paid for p in [*closed, *open_positions]), ZERO)
    by_symbol: dict[str, dict[str, Any]] = {}
    for p in closed:
        entry = by_symbol.setdefault(p.symbol, {"trades": 0, "wins": 0, "pnl": ZERO})
        entry["trades"] += 1
        entry["wins"] += p.realized_pnl > 0
        entry["pnl"] += p.realized_pnl
    reasons: Counter[str] = Counter()
    approved = rejected = 0
    for verdict in verdicts:
        if verdict.decision == "APPROVED":
            approved += 1
        else:
            rejected += 1
            reasons.update(verdict.reasons)
    span = (last_time - first_time).total_seconds() if first_time and last_time and last_time > first_time else 0.0
    held = [(p.opened_at, p.closed_at or last_time or p.opened_at) for p in [*closed, *open_positions]] if span else []
    returns = daily_returns(list(curve))
    return {
        "signals": len(verdicts),
        "approved": approved,
        "rejected": rejected,
        "rejected_by_reason": dict(reasons.most_common()),
        "orders": len(orders),
        "trades": len(closed),
        "open_positions": len(open_positions),
        "win_rate": round(wins / len(closed), 4) if closed else None,
        "pnl": str(pnl),
        "pnl_by_symbol": {
            s: {"trades": v["trades"], "win_rate": round(v["wins"] / v["trades"], 4), "pnl": str(v["pnl"])}
            for s, v in sorted(by_symbol.items())
        },
        "close_reasons": dict(Counter(p.close_reason or p.status for p in closed).most_common()),
        "fees": str(fees),
        "funding": str(funding),
        "final_equity": str(starting_equity + pnl),
        "return": round(float(pnl / starting_equity), 6) if starting_equity else None,
        "max_drawdown": round(float(max_drawdown(curve)), 6),
        "sharpe": sharpe(returns),
        "sortino": sortino(returns),
        "exposure": round(time_in_market(held) / span, 4) if span else 0.0,
        "average_open_positions": round(sum((b - a).total_seconds() for a, b in held) / span, 4) if span else 0.0,
    }
