"""`p95 risk quote`: the verdict the risk stage would give right now, without publishing anything.

The quote sees what the risk stage sees: the live portfolio (PostgreSQL) and the recent prices of
the symbol, read from the tail of p95.market.prices without a consumer group (nothing is joined or
committed), so the plan has the same one-day VaR. With `--offline`, or when the broker has no
prices for the symbol, the bundled candles of the symbol stand in when there are any.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from phoenix95.domain.execution import MarketTick
    from phoenix95.domain.risk import MarketView
    from phoenix95.schemas.codec import Codec
    from phoenix95.settings import Settings

logger = logging.getLogger(__name__)

#: Records read from the end of each partition of the prices topic to find the symbol's last prices.
PRICE_TAIL = 20_000

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
        False,
        "--offline",
        help="Quote against a fresh paper account and the bundled candles, without PostgreSQL or the broker.",
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Score, size and check a hypothetical signal: sizing, stop-loss, take-profit, liquidation price,
    margins, the one-day VaR from the symbol's recent prices and every reason it would be rejected."""
    from phoenix95.cli.console import UserError, print_json, stderr

    try:
        result = _run(symbol, side, price, confidence, rsi, macd, volume, strategy, offline=offline)
    except UserError as error:
        stderr.print(f"[red]error:[/red] {error}", highlight=False)
        raise typer.Exit(2) from None
    if as_json:
        print_json(result)
    else:
        _print(result)


def _run(
    symbol: str,
    side: str,
    price: str,
    confidence: str,
    rsi: str | None,
    macd: str | None,
    volume: str | None,
    strategy: str,
    *,
    offline: bool,
) -> dict[str, Any]:
    from phoenix95.cli.console import UserError

    if side not in ("long", "short"):
        raise UserError(f"--side must be long or short, not {side!r}")
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
        raise UserError(f"cannot quote this signal: {error}") from None
    return asyncio.run(_quote(signal, offline=offline))


async def _quote(signal: Any, *, offline: bool) -> dict[str, Any]:
    from phoenix95.domain.risk import PortfolioView, evaluate
    from phoenix95.schemas.convert import analyze, risk_request, verdict_message
    from phoenix95.settings import get_settings
    from phoenix95.streams.wiring import brackets_for, trading_config

    settings = get_settings()
    config = trading_config(settings)
    brackets = brackets_for(settings)
    if signal.symbol not in brackets:
        from phoenix95.cli.console import UserError

        known = ", ".join(sorted(brackets.symbols()))
        raise UserError(f"unknown symbol {signal.symbol}: it has no leverage brackets (known: {known})")
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
    request = risk_request(analysis)
    market, market_info = await _market_view(settings, signal.symbol, offline=offline)
    verdict = evaluate(request, portfolio=portfolio, market=market, config=config, brackets=brackets, now=now)
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
        "market": market_info,
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
    market = result["market"]
    console.print(f"[dim]{market['prices']} recent prices ({market['from']}); {result['state_from']}[/dim]")
    console.print(f"[dim]{result['note']}[/dim]")


async def _market_view(settings: Settings, symbol: str, *, offline: bool) -> tuple[MarketView, dict[str, Any]]:
    """What the risk stage knows of the symbol's market: its last price and the daily volatility
    of its recent returns (the same window of prices, hence the same VaR)."""
    from phoenix95.domain.risk import MarketView
    from phoenix95.domain.volatility import WINDOW, ReturnWindow
    from phoenix95.schemas.topics import Topics
    from phoenix95.streams.wiring import codec_for

    ticks: list[MarketTick] = []
    origin = "offline"
    if not offline:
        topic = Topics(settings.namespace).market_prices
        try:
            ticks = await asyncio.wait_for(
                recent_ticks(settings.kafka.bootstrap_servers, topic, symbol, codec_for(settings), count=WINDOW + 1),
                timeout=30,
            )
            origin = f"the broker, {topic}" if ticks else f"no {symbol} prices on {topic}"
        except Exception as error:  # an unreachable broker must not stop a quote: use the bundled data
            logger.warning("risk quote: cannot read %s from the broker: %s", topic, error)
            origin = f"broker unreachable ({type(error).__name__})"
    if not ticks:
        from phoenix95.connectors.market_data import CandleReplay, bundled_candle_file

        name = bundled_candle_file(symbol)
        if name is not None:
            ticks = CandleReplay.bundled(symbol, None).ticks()[-(WINDOW + 1) :]
            origin = f"{origin}; bundled candles {name}"
        else:
            origin = f"{origin}; no bundled candles for {symbol}"
    window = ReturnWindow()
    for tick in ticks:
        window.append(tick.time, tick.price)
    volatility = window.daily_volatility()
    info = {
        "prices": len(ticks),
        "from": origin,
        "first_time": ticks[0].time.isoformat() if ticks else None,
        "last_time": ticks[-1].time.isoformat() if ticks else None,
        "last_price": str(window.last_price) if window.last_price is not None else None,
        "daily_volatility": str(volatility) if volatility is not None else None,
    }
    return MarketView(last_price=window.last_price, daily_volatility=volatility), info


async def recent_ticks(
    bootstrap: str, topic: str, symbol: str, codec: Codec, *, count: int, tail: int = PRICE_TAIL
) -> list[MarketTick]:
    """The last `count` prices of `symbol` on the prices topic, oldest first.

    Reads the last `tail` records of every partition with manual assignment and no consumer group
    (nothing joined, nothing committed), keeps the records keyed by the symbol and decodes those;
    undecodable ones are skipped (the positions stage dead-letters them)."""
    from aiokafka import AIOKafkaConsumer

    from phoenix95.connectors.kafka_admin import end_offsets
    from phoenix95.schemas.codec import DecodeError
    from phoenix95.schemas.convert import tick_of
    from phoenix95.schemas.messages import MarketPrice

    ends = {tp: end for tp, end in (await end_offsets(bootstrap, [topic])).items() if end > 0}
    if not ends:
        return []
    key = symbol.encode()
    found: dict[str, MarketTick] = {}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        client_id="p95-risk-quote",
        fetch_max_wait_ms=50,
        request_timeout_ms=15000,
    )
    await consumer.start()
    try:
        consumer.assign(sorted(ends))
        for tp, end in ends.items():
            consumer.seek(tp, max(0, end - tail))
        waiting = dict(ends)
        deadline = time.monotonic() + 20
        while waiting and time.monotonic() < deadline:
            batches = await consumer.getmany(*waiting, timeout_ms=500)
            for tp, records in batches.items():
                for record in records:
                    if record.key != key or record.value is None or record.offset >= ends[tp]:
                        continue
                    try:
                        price = codec.decode(record.value, MarketPrice, headers=record.headers)
                    except DecodeError:
                        continue
                    if price.symbol == symbol:
                        found[price.event_id] = tick_of(price)
                if records and records[-1].offset + 1 >= ends[tp]:
                    waiting.pop(tp, None)
        if waiting:
            logger.warning("risk quote: read %s only partly within 20 s", topic)
    finally:
        await consumer.stop()
    return sorted(found.values(), key=lambda tick: tick.time)[-count:]
