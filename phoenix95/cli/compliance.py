"""`p95 compliance report [--day D] [--json]`: one trading day's post-trade report (the day in
`compliance.day_timezone`, UTC by default).

Trades, rejections by reason, protections tripped, trading-state changes with their actors, limit
usage (peak exposure against its limit) and the audit chain's status.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
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
    from phoenix95.storage.compliance_report import day_report
    from phoenix95.storage.postgres import Database

    settings = get_settings()
    async with Database(settings.postgres_url(), schema=settings.postgres.db_schema) as db:
        report = await day_report(
            db,
            day,
            timezone=settings.compliance.day_timezone,
            limit_per_symbol=settings.risk.max_exposure_per_symbol,
            max_open_positions=settings.risk.max_open_positions,
        )
    chain = await audit.verify(settings.postgres_url(), settings.postgres.db_schema)
    report["audit"] = {"ok": chain.ok, "entries": chain.checked, "broken_at": chain.broken_at, "problem": chain.problem}
    return report
