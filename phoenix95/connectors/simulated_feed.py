"""A simulated live market-data feed: geometric Brownian motion on the wall clock, published to
p95.market.prices, so paper trading works live with no exchange (`p95 feed simulate`, or
`p95 worker --stage feed`, which serves /health and /metrics on port 8102).

- `GbmWalk` is the pure generator: Decimal prices on the symbol's tick grid, reproducible with a seed.
- `start_prices` finds where each symbol starts: its last recorded price (Redis, then the last trade
  in PostgreSQL), else its last bundled candle (phoenix95/data/market), else the demo's reference
  price, else an explicit `--start SYMBOL=PRICE`.
- `run_feed` publishes one price per symbol every `interval_s` seconds until stopped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from phoenix95.connectors.market_data import bundled_candle_file, price_event, read_candles
from phoenix95.domain.config import DEFAULT_SYMBOL_RULES
from phoenix95.schemas.messages import MarketPrice

logger = logging.getLogger(__name__)

SECONDS_PER_YEAR = 365 * 24 * 3600
#: Start prices of symbols with no bundled candles (the ones the demo simulates from).
REFERENCE_PRICES: Mapping[str, Decimal] = {"BTCUSDT": Decimal("64000"), "ETHUSDT": Decimal("4600")}


def tick_size_of(symbol: str, start_price: Decimal) -> Decimal:
    """The symbol's tick size (exchange rules), else the precision of its start price."""
    rules = DEFAULT_SYMBOL_RULES.get(symbol)
    if rules is not None:
        return rules.tick_size
    exponent = start_price.normalize().as_tuple().exponent
    return Decimal(1).scaleb(min(int(exponent), 0) if isinstance(exponent, int) else -2)


@dataclass
class GbmWalk:
    """One symbol's price as geometric Brownian motion: each step of `dt` seconds multiplies the
    price by exp((mu - sigma^2/2) dt + sigma sqrt(dt) Z), sigma and mu annualized. Prices are Decimal,
    on the tick grid and never below one tick; the same seed gives the same path."""

    symbol: str
    start_price: Decimal
    volatility: float = 0.8
    drift: float = 0.0
    seed: int | None = None
    tick_size: Decimal | None = None
    _price: float = field(init=False, repr=False)
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.start_price <= 0:
            raise ValueError(f"{self.symbol}: the start price must be positive, not {self.start_price}")
        if self.tick_size is None:
            self.tick_size = tick_size_of(self.symbol, self.start_price)
        self._price = float(self.start_price)
        self._rng = random.Random(f"{self.seed}:{self.symbol}") if self.seed is not None else random.Random()

    @property
    def price(self) -> Decimal:
        return self._quantize(self._price)

    def step(self, dt_seconds: float) -> Decimal:
        """Advance `dt_seconds` and return the new price."""
        dt = max(dt_seconds, 0.0) / SECONDS_PER_YEAR
        sigma = self.volatility
        self._price *= math.exp((self.drift - 0.5 * sigma * sigma) * dt + sigma * math.sqrt(dt) * self._rng.gauss(0, 1))
        return self.price

    def _quantize(self, value: float) -> Decimal:
        tick = self.tick_size or Decimal("0.01")
        return max((Decimal(repr(value)) / tick).to_integral_value(), Decimal(1)) * tick


# -- where each symbol starts ----------------------------------------------------------------------------


def bundled_last_price(symbol: str) -> Decimal | None:
    name = bundled_candle_file(symbol)
    if name is None:
        return None
    candles = read_candles(name)
    return candles[-1].close if candles else None


async def recorded_price(settings: Any, symbol: str) -> Decimal | None:
    """The last price the pipeline saw: Redis (the positions stage's hot price), then the last trade."""
    if settings.redis.url is not None:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(settings.redis_url(), socket_timeout=1, socket_connect_timeout=1)
        try:
            raw = await client.get(f"{settings.redis.prefix}price:{symbol}:binance")
            if raw:
                return Decimal(json.loads(raw)["price"])
        finally:
            await client.aclose()
    if settings.postgres.url is not None:
        import psycopg
        from psycopg import sql

        async with await psycopg.AsyncConnection.connect(settings.postgres_url(), connect_timeout=2) as conn:
            await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(settings.postgres.db_schema)))
            cursor = await conn.execute(
                "SELECT COALESCE(exit_price, entry_price) FROM trades WHERE symbol = %s"
                " ORDER BY COALESCE(updated_at, created_at) DESC LIMIT 1",
                (symbol,),
            )
            row = await cursor.fetchone()
            if row and row[0] is not None:
                return Decimal(row[0])
    return None


async def start_prices(
    settings: Any, symbols: Sequence[str], given: Mapping[str, Decimal] | None = None, *, recorded: bool = True
) -> dict[str, tuple[Decimal, str]]:
    """symbol -> (start price, where it came from). Raises LookupError naming a symbol with none."""
    found: dict[str, tuple[Decimal, str]] = {}
    for symbol in symbols:
        if given and symbol in given:
            found[symbol] = (given[symbol], "given")
            continue
        price = None
        if recorded:
            try:
                price = await recorded_price(settings, symbol)
            except Exception as error:  # a store that is down or not migrated: fall back to the bundled data
                logger.info("feed: no recorded price for %s (%s)", symbol, error)
        if price is not None:
            found[symbol] = (price, "recorded")
        elif (price := bundled_last_price(symbol)) is not None:
            found[symbol] = (price, "bundled candles")
        elif symbol in REFERENCE_PRICES:
            found[symbol] = (REFERENCE_PRICES[symbol], "reference")
        else:
            raise LookupError(f"no bundled or recorded price for {symbol}: give one with --start {symbol}=PRICE")
    return found


# -- the loop ----------------------------------------------------------------------------------------------


def simulated_price(symbol: str, price: Decimal, at: datetime, namespace: str) -> MarketPrice:
    return price_event(symbol=symbol, time=at, price=price, source="simulated", namespace=namespace)


@dataclass
class FeedStats:
    published: int = 0
    last_published_at: float | None = None
    errors: int = 0


async def run_feed(
    walks: Sequence[GbmWalk],
    publish: Callable[[list[MarketPrice]], Any],
    *,
    interval_s: float,
    namespace: str = "",
    limit: int | None = None,
    stats: FeedStats | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> FeedStats:
    """Publish one price per walk every `interval_s` seconds (the first at once), `limit` rounds or
    until cancelled. A failed publish is logged and retried at the next round (the feed is live:
    a late price is worth less than the next one)."""
    stats = stats or FeedStats()
    rounds = 0
    last = time.monotonic()
    next_at = last
    while limit is None or rounds < limit:
        now = time.monotonic()
        dt, last = now - last, now
        at = clock()
        events = [
            simulated_price(walk.symbol, walk.step(dt) if rounds else walk.price, at, namespace) for walk in walks
        ]
        try:
            await publish(events)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            stats.errors += 1
            logger.warning("feed: publishing %d prices failed: %s", len(events), error)
        else:
            stats.published += len(events)
            stats.last_published_at = time.time()
        rounds += 1
        next_at += interval_s
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    return stats
