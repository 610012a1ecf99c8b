"""`p95 feed binance --symbols ...`: live mark prices and 1-minute candles -> p95.market.prices."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import typer

feed_app = typer.Typer(help="Live market data feeds.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(feed_app, name="feed")


@feed_app.command("binance")
def binance(
    symbols: str = typer.Option("BTCUSDT,ETHUSDT", "--symbols", help="Comma-separated symbols."),
    duration: float = typer.Option(0.0, "--duration", help="Stop after this many seconds (0: run until stopped)."),
) -> None:
    """Binance USDⓈ-M mark-price (1 s) and 1-minute kline streams, reconnecting with backoff and
    backfilling gaps by REST; publishes to p95.market.prices (P95_EXCHANGE__BASE_URL/WS_URL override
    the endpoints)."""
    from phoenix95.cli.console import UserError, stderr
    from phoenix95.settings import get_settings

    chosen = [s.strip().upper() for s in symbols.split(",") if s.strip()]
    if not chosen:
        raise UserError("--symbols: give at least one symbol, e.g. --symbols BTCUSDT,ETHUSDT")
    settings = get_settings()
    published = asyncio.run(run_feed(settings, chosen, duration))
    stderr.print(f"feed: {published} market events published")


async def run_feed(settings: Any, symbols: list[str], duration: float) -> int:
    from phoenix95.connectors.binance_feed import BinanceFeed
    from phoenix95.connectors.exchange.binance_rest import BinanceRest
    from phoenix95.connectors.exchange.user_stream import ws_base
    from phoenix95.connectors.kafka_admin import ensure_topics
    from phoenix95.schemas.codec import Codec
    from phoenix95.schemas.topics import Topics
    from phoenix95.streams.producer import EventProducer

    topics = Topics(settings.namespace)
    await ensure_topics(settings.kafka.bootstrap_servers, topics.all(), partitions=settings.kafka.partitions)
    codec = Codec.for_settings(settings)
    codec.prepare()
    producer = EventProducer(settings.kafka.bootstrap_servers, topics, codec, client_id="phoenix95-feed")
    await producer.start()
    rest = BinanceRest(settings.exchange)
    feed = BinanceFeed(
        symbols,
        ws_url=ws_base(settings.exchange),
        fetch=lambda method, params: rest.call(method, params),
        publish=lambda events: producer.publish(list(events)),
        namespace=settings.namespace,
    )
    task = asyncio.create_task(feed.run())
    try:
        if duration > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), duration)
        else:
            await task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await rest.close()
        await producer.stop()
    return feed.published
