"""The compliance report of one trading day: trades, rejections by reason, protections tripped,
trading-state changes with their actors, limit usage (peak exposure against its limit). Read by
`p95 compliance report`, the API (`/v1/compliance/report`) and the dashboard's Risk page."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from phoenix95.storage.postgres import Database


async def day_report(
    db: Database, day: date, *, timezone: str, limit_per_symbol: Decimal, max_open_positions: int
) -> dict[str, Any]:
    """The post-trade report of one trading day (`day` in `timezone`), without the audit chain's
    status (the caller verifies the chain: it reads every entry)."""
    zone = ZoneInfo(timezone)
    start = datetime(day.year, day.month, day.day, tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=zone)
    trades = await db.fetch(
        """SELECT position_id::text, symbol, side, quantity, entry_price, exit_price, realized_pnl, close_reason,
                  closed_at FROM positions
            WHERE status <> 'open' AND closed_at >= %s AND closed_at < %s ORDER BY closed_at""",
        (start, end),
    )
    rejections = await db.fetch(
        """SELECT reason, COUNT(*) FROM risk_verdicts, unnest(reasons) AS reason
            WHERE decision = 'REJECTED' AND decided_at >= %s AND decided_at < %s
            GROUP BY reason ORDER BY COUNT(*) DESC, reason""",
        (start, end),
    )
    trips = await db.fetch(
        "SELECT reason, at, subject, message, figures FROM protection_trips WHERE at >= %s AND at < %s ORDER BY at",
        (start, end),
    )
    changes = await db.fetch(
        """SELECT at, actor, subject, payload::jsonb->>'reason' FROM audit_log
            WHERE action = 'trading_state' AND at >= %s AND at < %s ORDER BY seq""",
        (start, end),
    )
    exposure_rows = await db.fetch(
        """SELECT symbol, leveraged_size, opened_at, closed_at FROM positions
            WHERE opened_at < %s AND (closed_at IS NULL OR closed_at >= %s)""",
        (end, start),
    )
    peak_by_symbol, peak_total = peak_exposure(exposure_rows, start, end)
    return {
        "day": day.isoformat(),
        "timezone": timezone,
        "trades": {
            "count": len(trades),
            "realized_pnl": str(sum((r[6] or Decimal(0) for r in trades), Decimal(0))),
            "items": [
                {
                    "position_id": r[0],
                    "symbol": r[1],
                    "side": r[2],
                    "quantity": str(r[3]),
                    "entry_price": str(r[4]),
                    "exit_price": str(r[5]),
                    "realized_pnl": str(r[6]),
                    "close_reason": r[7],
                    "closed_at": r[8].isoformat(),
                }
                for r in trades
            ],
        },
        "rejections_by_reason": {r[0]: r[1] for r in rejections},
        "protections": [
            {"reason": r[0], "at": r[1].isoformat(), "subject": r[2], "message": r[3], "figures": r[4]} for r in trips
        ],
        "state_changes": [{"at": r[0].isoformat(), "actor": r[1], "state": r[2], "reason": r[3]} for r in changes],
        "limit_usage": {
            "peak_by_symbol": {s: str(v) for s, v in sorted(peak_by_symbol.items())},
            "peak_total": str(peak_total),
            "limit_per_symbol": str(limit_per_symbol),
            "max_open_positions": max_open_positions,
        },
    }


def peak_exposure(rows: list[tuple[Any, ...]], start: datetime, end: datetime) -> tuple[dict[str, Decimal], Decimal]:
    """Peak open notional per symbol and in total over [start, end), from (symbol, notional,
    opened_at, closed_at) of the positions open at some point of it (a sweep over opens and closes)."""
    events: list[tuple[datetime, int, str, Decimal]] = []
    for symbol, notional, opened_at, closed_at in rows:
        events.append((max(opened_at, start), 1, symbol, notional or Decimal(0)))
        if closed_at is not None and closed_at < end:
            events.append((closed_at, 0, symbol, -(notional or Decimal(0))))  # closes before opens at a tie
    current: dict[str, Decimal] = {}
    peak: dict[str, Decimal] = {}
    total = peak_total = Decimal(0)
    for _, _, symbol, change in sorted(events, key=lambda e: (e[0], e[1])):
        current[symbol] = current.get(symbol, Decimal(0)) + change
        total += change
        peak[symbol] = max(peak.get(symbol, Decimal(0)), current[symbol])
        peak_total = max(peak_total, total)
    return peak, peak_total
