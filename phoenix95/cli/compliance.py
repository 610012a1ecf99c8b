"""`p95 compliance report [--day D] [--json]`: one trading day's post-trade report (the day in
`compliance.day_timezone`, UTC by default).

Trades, rejections by reason, protections tripped, trading-state changes with their actors, limit
usage (peak exposure against its limit) and the audit chain's status.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import typer

compliance_app = typer.Typer(help="Compliance: the post-trade report.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(compliance_app, name="compliance")


@compliance_app.command("report")
def compliance_report(
    day: str = typer.Option(
        None, "--day", help="The trading day (YYYY-MM-DD, in compliance.day_timezone); default today."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object."),
) -> None:
    """Trades, rejections by reason, protections tripped, state changes, limit usage, audit status."""
    from phoenix95.cli.console import UserError, print_json, stderr

    try:
        from phoenix95.settings import get_settings

        zone = get_settings().compliance.protection_config().zone
        chosen = date.fromisoformat(day) if day else datetime.now(UTC).astimezone(zone).date()
    except ValueError:
        raise UserError(f"--day {day!r}: expected YYYY-MM-DD") from None
    report = asyncio.run(build_report(chosen))
    if as_json:
        print_json(report)
        return
    stderr.print(f"[bold]Compliance report {report['day']}[/bold] ({report['timezone']})")
    trades = report["trades"]
    stderr.print(f"trades: {trades['count']} closed, realized PnL {trades['realized_pnl']}")
    for row in trades["items"]:
        stderr.print(
            f"  {row['closed_at'][:19]} {row['symbol']} {row['side']} {row['quantity']} @ {row['entry_price']}"
            f" -> {row['exit_price']} {row['close_reason']} pnl {row['realized_pnl']}"
        )
    rejections = report["rejections_by_reason"]
    stderr.print("rejections: " + (", ".join(f"{k} {v}" for k, v in rejections.items()) or "none"))
    stderr.print(f"protections tripped: {len(report['protections'])}")
    for trip in report["protections"]:
        stderr.print(f"  {trip['at'][:19]} {trip['reason']} {trip['subject'] or ''}: {trip['message']}")
    stderr.print(f"trading-state changes: {len(report['state_changes'])}")
    for change in report["state_changes"]:
        stderr.print(f"  {change['at'][:19]} {change['state']} by {change['actor']}: {change['reason']}")
    usage = report["limit_usage"]
    stderr.print(
        f"peak exposure: total {usage['peak_total']}; per symbol limit {usage['limit_per_symbol']}"
        + "".join(f"; {s} {v}" for s, v in usage["peak_by_symbol"].items())
    )
    chain = report["audit"]
    stderr.print(
        f"audit chain: {'ok' if chain['ok'] else 'BROKEN at ' + str(chain['broken_at'])}, {chain['entries']} entries"
    )


async def build_report(day: date) -> dict[str, Any]:
    from phoenix95.settings import get_settings
    from phoenix95.storage import audit
    from phoenix95.storage.postgres import Database

    settings = get_settings()
    zone = settings.compliance.protection_config().zone
    start = datetime(day.year, day.month, day.day, tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=zone)
    async with Database(settings.postgres_url(), schema=settings.postgres.db_schema) as db:
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
    chain = await audit.verify(settings.postgres_url(), settings.postgres.db_schema)
    peak_by_symbol, peak_total = peak_exposure(exposure_rows, start, end)
    return {
        "day": day.isoformat(),
        "timezone": settings.compliance.day_timezone,
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
            "limit_per_symbol": str(settings.risk.max_exposure_per_symbol),
            "max_open_positions": settings.risk.max_open_positions,
        },
        "audit": {"ok": chain.ok, "entries": chain.checked, "broken_at": chain.broken_at, "problem": chain.problem},
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
