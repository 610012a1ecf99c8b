"""`p95 feed simulate`: simulated live prices (GBM on the wall clock) to p95.market.prices, with
/health and /metrics on the feed's port (8102). `p95 worker --stage feed` runs the same loop."""

from __future__ import annotations

import asyncio
import re
from decimal import Decimal, InvalidOperation
from typing import Any

import typer

from phoenix95.cli.console import UserError, stderr

HELP = "Market-data feeds."


def register(app: typer.Typer) -> None:
    """Adds `simulate` to the `feed` sub-app (creating it when no other module did)."""
    for group in app.registered_groups:
        if group.name == "feed" and group.typer_instance is not None:
            group.typer_instance.command("simulate")(simulate)
            return
    feed_app = typer.Typer(help=HELP, no_args_is_help=True)
    feed_app.command("simulate")(simulate)
    app.add_typer(feed_app, name="feed")


def parse_interval(text: str) -> float:
    """`1s`, `500ms`, `2m` or plain seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*", text)
    if not match:
        raise UserError(f"--interval {text!r}: expected e.g. 1s, 500ms or 2m")
    value = float(match[1]) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[match[2]]
    if value <= 0:
        raise UserError("--interval must be positive")
    return value


def parse_starts(values: list[str] | None) -> dict[str, Decimal]:
    starts = {}
    for value in values or []:
        symbol, _, price = value.partition("=")
        try:
            starts[symbol.strip().upper()] = Decimal(price)
        except InvalidOperation:
            raise UserError(f"--start {value!r}: expected SYMBOL=PRICE, e.g. BNBUSDT=580") from None
        if starts[symbol.strip().upper()] <= 0:
            raise UserError(f"--start {value!r}: the price must be positive")
    return starts


def simulate(
    symbols: str = typer.Option(
        None, "--symbols", help="Comma-separated symbols. Default: P95_FEED__SYMBOLS (XRPUSDT,BTCUSDT,ETHUSDT)."
    ),
    interval: str = typer.Option(None, "--interval", help="Time between prices: 1s, 500ms, 2m. Default: 1s."),
    volatility: float = typer.Option(
        None, "--volatility", min=0, help="Annualized volatility (0.8 = 80 %/year). Default: P95_FEED__VOLATILITY."
    ),
    seed: int = typer.Option(None, "--seed", help="Seed for a reproducible path."),
    start: list[str] = typer.Option(None, "--start", help="SYMBOL=PRICE to start from (repeat)."),
    count: int = typer.Option(None, "--count", min=1, help="Stop after this many rounds (default: run until stopped)."),
    port: int = typer.Option(
        None, "--port", help="Serve /health and /metrics here. Default: P95_PORTS__FEED (8102); 0 picks a free port."
    ),
) -> None:
    """Publish simulated live prices (geometric Brownian motion on the wall clock) to p95.market.prices,
    each symbol starting from its last recorded or bundled price. Paper trading then works live."""
    from phoenix95.settings import get_settings

    settings = get_settings()
    chosen = [s.strip().upper() for s in symbols.split(",") if s.strip()] if symbols else list(settings.feed.symbols)
    run_simulated_feed(
        settings,
        chosen,
        interval_s=parse_interval(interval) if interval else settings.feed.interval_s,
        volatility=settings.feed.volatility if volatility is None else volatility,
        seed=seed if seed is not None else settings.feed.seed,
        starts=parse_starts(start),
        port=settings.ports.feed if port is None else port,
        limit=count,
    )


def check_symbols(settings: Any, symbols: list[str]) -> None:
    if not symbols:
        raise UserError("no symbols: pass --symbols XRPUSDT,BTCUSDT")
    allowed = settings.risk.trading_config().allowed_symbols
    unknown = [s for s in symbols if s not in allowed]
    if unknown:
        raise UserError(
            f"unknown symbol(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))} "
            "(add more with P95_RISK__EXTRA_SYMBOLS)"
        )


def run_simulated_feed(
    settings: Any,
    symbols: list[str],
    *,
    interval_s: float,
    volatility: float,
    seed: int | None,
    starts: dict[str, Decimal],
    port: int | None,
    limit: int | None = None,
) -> None:
    check_symbols(settings, symbols)
    if port:
        from phoenix95.cli.ports import check_port_free

        check_port_free(settings.metrics.host, port, what="the feed", setting="P95_PORTS__FEED or --port")
    try:
        asyncio.run(_run(settings, symbols, interval_s, volatility, seed, starts, port, limit))
    except KeyboardInterrupt:
        pass


async def _run(
    settings: Any,
    symbols: list[str],
    interval_s: float,
    volatility: float,
    seed: int | None,
    starts: dict[str, Decimal],
    port: int | None,
    limit: int | None,
) -> None:
    from prometheus_client import CollectorRegistry, Counter, Gauge

    from phoenix95.connectors.kafka_admin import ensure_topics
    from phoenix95.connectors.simulated_feed import FeedStats, GbmWalk, run_feed, start_prices
    from phoenix95.monitoring.health import Dependency, Health, dependency_checks, registered, serve_health
    from phoenix95.schemas.codec import Codec
    from phoenix95.schemas.topics import Topics
    from phoenix95.streams.producer import EventProducer

    topics = Topics(settings.namespace)
    await ensure_topics(
        settings.kafka.bootstrap_servers,
        topics.all(),
        partitions=settings.kafka.partitions,
        replication_factor=settings.kafka.replication_factor,
        counts=topics.partition_counts(settings.kafka.partitions, settings.risk.clock),
    )
    try:
        found = await start_prices(settings, symbols, starts)
    except LookupError as error:
        raise UserError(str(error)) from None
    walks = [GbmWalk(symbol, price, volatility=volatility, seed=seed) for symbol, (price, _) in found.items()]
    stats = FeedStats()
    registry = CollectorRegistry()
    published = Counter("p95_feed_prices_published", "Simulated prices published", ["symbol"], registry=registry)
    last_price = Gauge("p95_feed_last_price", "Last simulated price", ["symbol"], registry=registry)

    async def publishing() -> str | None:
        import time

        if stats.last_published_at is None or time.time() - stats.last_published_at > max(3 * interval_s, 5):
            raise RuntimeError("no price published recently")
        return f"{stats.published} prices"

    checks = {**dependency_checks(settings, "broker"), "publishing": Dependency(publishing)}
    health = Health("feed", checks, port=port)
    producer = EventProducer(
        settings.kafka.bootstrap_servers, topics, Codec.for_settings(settings), client_id="phoenix95-feed"
    )
    await producer.start()
    server = await serve_health(health, settings.metrics.host, port, metrics=registry) if port is not None else None

    async def publish(events: list[Any]) -> None:
        await producer.publish(events)
        for event in events:
            published.labels(event.symbol).inc()
            last_price.labels(event.symbol).set(float(event.price))

    for symbol, (price, origin) in found.items():
        stderr.print(f"{symbol}: from {price} ({origin})")
    where = f"; /health on http://{settings.metrics.host}:{health.port}/health" if server is not None else ""
    stderr.print(
        f"simulated feed: {', '.join(symbols)} every {interval_s:g}s to {topics.market_prices} "
        f"(volatility {volatility:g}/year){where}"
    )
    try:
        with registered(settings.home, "feed", port=health.port if server else None, host=settings.metrics.host):
            await run_feed(
                walks, publish, interval_s=interval_s, namespace=settings.namespace, limit=limit, stats=stats
            )
    finally:
        if server is not None:
            await server.stop()
        await producer.stop()
    stderr.print(f"published {stats.published} prices")
