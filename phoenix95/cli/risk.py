"""`p95 risk quote`: the verdict the risk stage would give right now, without publishing anything."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import typer

risk_app = typer.Typer(help="Risk checks and sizing.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(risk_app, name="risk")


@risk_app.command("quote")
def quote(
    symbol: str = typer.Option(..., "--symbol", "-s", help="e.g. BTCUSDT"),
    side: str = typer.Option(..., "--side", help="long or short"),
    price: str = typer.Option(..., "--price", "-p", help="Entry price."),
    confidence: str = typer.Option(..., "--confidence", "-c", help="Signal confidence in [0, 1]."),
    rsi: str = typer.Option(None, help="RSI at signal time."),
    macd: str = typer.Option(None, help="MACD at signal time."),
    volume: str = typer.Option(None, help="Volume at signal time."),
    strategy: str = typer.Option("quote", help="Strategy name (duplicate detection)."),
    offline: bool = typer.Option(
        False, "--offline", help="Quote against a fresh paper account instead of the live state."
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Score, size and check a hypothetical signal: sizing, stop-loss, take-profit, liquidation price,
    margins and every reason it would be rejected."""
    from phoenix95.cli.main import UserError, print_json

    if side not in ("long", "short"):
        raise UserError("--side must be long or short")
    from phoenix95.schemas.signal_input import InvalidSignal, build_signal

    payload: dict[str, Any] = {
        "symbol": symbol,
        "action": side,
        "price": price,
        "confidence": confidence,
        "strategy": strategy,
    }
    for key, value in (("rsi", rsi), ("macd", macd), ("volume", volume)):
        if value is not None:
            payload[key] = value
    try:
        signal = build_signal(payload, producer="quote", signal_id=str(uuid.uuid4()), default_source="api")
    except InvalidSignal as error:
        raise UserError(str(error)) from None
    result = asyncio.run(_quote(signal, offline=offline))
    if as_json:
        print_json(result)
    else:
        _print(result)


async def _quote(signal: Any, *, offline: bool) -> dict[str, Any]:
    from phoenix95.agents.analysis import analyze
    from phoenix95.agents.risk_desk import verdict_message
    from phoenix95.domain.risk import MarketView, PortfolioView, RiskRequest, evaluate
    from phoenix95.settings import get_settings
    from phoenix95.streams.wiring import brackets_for, trading_config

    settings = get_settings()
    config = trading_config(settings)
    brackets = brackets_for(settings)
    if signal.symbol not in brackets:
        from phoenix95.cli.main import UserError

        raise UserError(f"{signal.symbol} has no leverage brackets (known: {', '.join(sorted(brackets.symbols()))})")
    analysis = analyze(signal, producer="quote")
    now = datetime.now(UTC)
    portfolio = PortfolioView(equity=config.starting_equity)
    source = "offline: a fresh paper account"
    if not offline:
        from phoenix95.storage.postgres import Database
        from phoenix95.storage.readers import PgPortfolio

        async with Database(settings.postgres_url(), schema=settings.postgres.db_schema, connect_timeout=3) as db:
            reader = PgPortfolio(db, config.starting_equity, brackets, config.funding_interval)
            snapshot = await reader.snapshot()
            approvals, recent = await reader.recent(max(config.duplicate_window, config.signal_max_age))
        portfolio = PortfolioView(
            equity=snapshot.equity,
            trading_state=snapshot.trading_state,
            exposures=snapshot.exposures,
            recent_approvals=tuple(approvals),
            recent_signals=tuple(recent),
        )
        source = f"live state (schema {settings.postgres.db_schema})"
    request = RiskRequest(
        analysis.signal_id,
        analysis.symbol,
        analysis.side,
        analysis.price,
        analysis.confidence,
        analysis.phoenix95_score,
        analysis.final_confidence,
        analysis.strategy,
        analysis.timeframe,
        analysis.ts_event,
    )
    verdict = evaluate(request, portfolio=portfolio, market=MarketView(), config=config, brackets=brackets, now=now)
    message = verdict_message(analysis, verdict, decided_at=now, producer="quote")
    plan = message.plan.model_dump(mode="json") if message.plan is not None else None
    return {
        "symbol": message.symbol,
        "side": message.side,
        "decision": message.decision,
        "reasons": list(message.reasons),
        "details": list(message.details),
        "phoenix95_score": str(analysis.phoenix95_score),
        "final_confidence": str(analysis.final_confidence),
        "adjustments": [a.model_dump(mode="json") for a in analysis.adjustments],
        "trading_state": message.trading_state,
        "open_positions": sum(1 for e in portfolio.exposures if not e.pending),
        "equity": str(portfolio.equity),
        "plan": plan,
        "state_from": source,
        "note": "stop-loss and take-profit are a move in price from entry; at the plan's leverage a 2 % move is "
        f"{Decimal(2) * (plan['leverage'] if plan else config.leverage)} % of the margin",
    }


def _print(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    colour = "green" if result["decision"] == "APPROVED" else "red"
    console.print(
        f"[bold {colour}]{result['decision']}[/] {result['side']} {result['symbol']}  score {result['phoenix95_score']}"
    )
    for detail in result["details"]:
        console.print(f"  • {detail}")
    plan = result["plan"]
    if plan:
        table = Table(show_header=False)
        for key in (
            "entry_price",
            "quantity",
            "notional",
            "leverage",
            "initial_margin",
            "maintenance_margin",
            "stop_loss_price",
            "take_profit_price",
            "liquidation_price",
            "kelly",
            "position_fraction",
            "equity",
            "free_margin",
            "var_1d_95",
        ):
            table.add_row(key, str(plan.get(key)))
        console.print(table)
    console.print(f"[dim]{result['state_from']}; {result['note']}[/dim]")
