"""`p95 exchange check | reconcile`: the live exchange (``P95_EXCHANGE__KIND=binance-demo|binance``)."""

from __future__ import annotations

import asyncio
from typing import Any

import typer

exchange_app = typer.Typer(help="The live exchange: check the keys, reconcile with PostgreSQL.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(exchange_app, name="exchange")


def _settings() -> Any:
    from phoenix95.cli.console import UserError
    from phoenix95.settings import get_settings

    settings = get_settings()
    if not settings.exchange.live():
        raise UserError("P95_EXCHANGE__KIND is paper: set it to binance-demo (or binance) to use a live exchange")
    problems = settings.exchange.problems()
    if problems:
        raise UserError("; ".join(problems))
    return settings


@exchange_app.command("check")
def check(as_json: bool = typer.Option(False, "--json", help="Print the result as JSON.")) -> None:
    """Connectivity, the key's permissions (trading on, withdrawals off), balance, positions, open orders."""
    from phoenix95.cli.console import UserError, print_json, stderr

    settings = _settings()
    result = asyncio.run(_check(settings))
    if as_json:
        print_json(result.as_dict())
    else:
        stderr.print(
            f"exchange: {result.exchange}  reachable: {result.connectivity}  clock offset: {result.clock_offset_ms} ms"
        )
        stderr.print(
            f"trading enabled: {result.can_trade}  withdrawals: {result.withdrawals}  "
            f"IP whitelist: {result.ip_restricted}"
        )
        stderr.print(f"balance: {result.balance or '-'}")
        for position in result.positions:
            stderr.print(
                f"position {position['symbol']} {position['amount']} @ {position['entry_price']} "
                f"(mark {position['mark_price']})"
            )
        stderr.print(f"open orders: {result.open_orders}  open protection orders: {result.open_protection}")
        for warning in result.warnings:
            stderr.print(f"[yellow]warning:[/yellow] {warning}")
    if result.fatal:
        raise UserError(result.fatal)


async def _check(settings: Any) -> Any:
    from phoenix95.connectors.exchange.binance import BinanceExchange
    from phoenix95.connectors.exchange.binance_rest import BinanceRest
    from phoenix95.connectors.exchange.check import check_account

    rest = BinanceRest(settings.exchange)
    try:
        return await check_account(BinanceExchange(rest, None, settings.exchange))  # type: ignore[arg-type]
    finally:
        await rest.close()


@exchange_app.command("reconcile")
def reconcile(
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    act: bool = typer.Option(
        False, "--act", help="Also adopt and close (what a starting worker does); default: report only."
    ),
) -> None:
    """Compare the exchange's orders, fills and positions with PostgreSQL; unresolved differences HALT trading."""
    from phoenix95.cli.console import UserError, print_json, stderr

    settings = _settings()
    report = asyncio.run(_reconcile(settings, act))
    if as_json:
        print_json(report.as_dict())
    else:
        for difference in report.differences:
            mark = "ok " if difference.resolved else "!! "
            stderr.print(
                f"{mark}{difference.kind} {difference.subject}: {difference.detail}"
                + (f" -> {difference.action}" if difference.action else "")
            )
        stderr.print(report.summary() + (" (trading HALTED)" if report.halted else ""))
    if report.error:
        raise UserError(f"reconciliation incomplete: {report.error}")


async def _reconcile(settings: Any, act: bool) -> Any:
    from phoenix95.connectors.exchange.live import LiveExchange
    from phoenix95.storage.postgres import Database, migrate
    from phoenix95.streams.producer import LazyProducer

    await migrate(settings.postgres_url(), settings.postgres.db_schema)
    async with Database(settings.postgres_url(), schema=settings.postgres.db_schema) as db:
        live = LiveExchange(
            settings,
            db,
            symbols=sorted(settings.risk.trading_config().allowed_symbols),
            publisher=LazyProducer(settings),
        )
        try:
            return await live.reconcile(trigger="manual", act=act)
        finally:
            await live.stop()


def preflight(settings: Any, stages: list[str]) -> None:
    """At worker start: a live exchange that cannot trade stops the execution worker with one line."""
    from phoenix95.cli.console import UserError

    if "execution" not in stages or not settings.exchange.live():
        return
    problems = settings.exchange.problems()
    if problems:
        raise UserError("; ".join(problems))
    result = asyncio.run(_check(settings))
    if result.fatal:
        raise UserError(result.fatal)
