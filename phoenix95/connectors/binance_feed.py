"""Live market data from Binance USDⓈ-M: the mark-price (1 s) and 1-minute kline streams of the
given symbols -> MarketPrice events on p95.market.prices (`p95 feed binance --symbols ...`).

- One combined websocket (``/stream?streams=btcusdt@markPrice@1s/btcusdt@kline_1m/...``); dropped, it
  reconnects with backoff (0.5 s doubling to 30 s).
- On every (re)connect the closed 1-minute candles missed since the last one are fetched by REST
  (``/fapi/v1/klines``) and published first: a gap is filled, not skipped.
- Duplicates (a candle both backfilled and streamed, a re-sent message) are dropped by event time per
  symbol and source; event ids are derived from symbol, source and time, so consumers dedupe too.
- ``p95_market_data_age_seconds{symbol}``: seconds since the symbol's latest event; risk rejects new
  signals with SIGNAL_STALE when it exceeds the limit (P95_RISK__MAX_MARKET_DATA_AGE_S).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from prometheus_client import Counter, Gauge

from phoenix95.connectors.market_data import price_event
from phoenix95.schemas.messages import MarketPrice

logger = logging.getLogger(__name__)

DATA_AGE = Gauge("p95_market_data_age_seconds", "Seconds since the latest market event of a symbol", ["symbol"])
FEED_EVENTS = Counter("p95_market_feed_events_total", "Live market events by outcome", ["outcome"])
FEED_RECONNECTS = Counter("p95_market_feed_reconnects_total", "Market stream reconnects")

MARK_SOURCE = "binance-mark"
KLINE_SOURCE = "binance-kline"
MINUTE_MS = 60_000

Publish = Callable[[Sequence[MarketPrice]], Awaitable[None]]
Fetch = Callable[[str, dict[str, Any]], Awaitable[Any]]


class BinanceFeed:
    def __init__(
        self,
        symbols: Sequence[str],
        *,
        ws_url: str,
        fetch: Fetch,
        publish: Publish,
        namespace: str = "",
        backfill_limit: int = 1000,
    ):
        self.symbols = [s.upper() for s in symbols]
        self.ws_url = ws_url.rstrip("/")
        self.fetch = fetch
        self.publish = publish
        self.namespace = namespace
        self.backfill_limit = backfill_limit
        #: (symbol, source) -> the latest event time published (ms): older or equal ones are duplicates.
        self.latest: dict[tuple[str, str], int] = {}
        self.last_seen: dict[str, float] = {}
        self.connected = asyncio.Event()
        self.connects = 0
        self.published = 0
        self.duplicates = 0
        self.backfilled = 0

    def stream_url(self) -> str:
        streams = "/".join(f"{s.lower()}@markPrice@1s/{s.lower()}@kline_1m" for s in self.symbols)
        return f"{self.ws_url}/stream?streams={streams}"

    async def run(self) -> None:
        backoff = 0.5
        ager = asyncio.create_task(self._age())
        try:
            while True:
                started = time.monotonic()
                try:
                    await self._session()
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    logger.warning("feed: market stream down (%s); reconnecting in %.1f s", error, backoff)
                self.connected.clear()
                FEED_RECONNECTS.inc()
                if time.monotonic() - started > 30:
                    backoff = 0.5
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
        finally:
            ager.cancel()

    async def _session(self) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as session, session.ws_connect(self.stream_url(), heartbeat=30) as ws:
            self.connects += 1
            await self.backfill()
            self.connected.set()
            logger.info("feed: market stream connected (%s)", ", ".join(self.symbols))
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    await self.handle(message.data)
                elif message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    break
        raise ConnectionError("stream closed")

    async def backfill(self) -> None:
        """Closed candles since the last one published (REST), so a disconnect leaves no gap."""
        for symbol in self.symbols:
            last = self.latest.get((symbol, KLINE_SOURCE))
            if last is None:
                continue  # nothing published yet: start from the stream
            rows = await self.fetch(
                "fapiPublicGetKlines",
                {"symbol": symbol, "interval": "1m", "startTime": last + 1, "limit": self.backfill_limit},
            )
            now_ms = int(time.time() * 1000)
            events = []
            for row in rows if isinstance(rows, list) else []:
                try:
                    close_time = int(row[6])
                    if close_time >= now_ms:
                        continue  # still open: the stream will close it
                    event = self._kline(symbol, close_time, row[1], row[2], row[3], row[4], row[5])
                except (IndexError, TypeError, ValueError, ArithmeticError):
                    FEED_EVENTS.labels("malformed").inc()
                    continue
                if event is not None:
                    events.append(event)
            if events:
                self.backfilled += len(events)
                await self._publish(events)

    async def handle(self, text: str) -> None:
        try:
            envelope = json.loads(text)
            data = envelope.get("data", envelope)
            kind = data.get("e")
            event: MarketPrice | None = None
            if kind == "markPriceUpdate":
                event = self._accept(
                    str(data["s"]),
                    MARK_SOURCE,
                    int(data["E"]),
                    lambda: price_event(
                        symbol=str(data["s"]),
                        time=_time(int(data["E"])),
                        price=Decimal(str(data["p"])),
                        mark_price=Decimal(str(data["p"])),
                        funding_rate=Decimal(str(data["r"])) if data.get("r") not in (None, "") else None,
                        source=MARK_SOURCE,
                        namespace=self.namespace,
                    ),
                )
            elif kind == "kline":
                k = data["k"]
                if not k.get("x"):
                    return  # only closed candles
                event = self._kline(str(data["s"]), int(k["T"]), k["o"], k["h"], k["l"], k["c"], k["v"])
            else:
                return
        except (ValueError, KeyError, TypeError, AttributeError, ArithmeticError):
            FEED_EVENTS.labels("malformed").inc()
            logger.warning("feed: malformed market message dropped: %.200s", text)
            return
        if event is not None:
            await self._publish([event])

    def _kline(self, symbol: str, close_ms: int, o: Any, h: Any, low: Any, c: Any, v: Any) -> MarketPrice | None:
        return self._accept(
            symbol,
            KLINE_SOURCE,
            close_ms,
            lambda: price_event(
                symbol=symbol,
                time=_time(close_ms + 1),  # the candle is known when it closes
                price=Decimal(str(c)),
                open_=Decimal(str(o)),
                high=Decimal(str(h)),
                low=Decimal(str(low)),
                volume=Decimal(str(v)),
                interval="1m",
                source=KLINE_SOURCE,
                namespace=self.namespace,
            ),
        )

    def _accept(self, symbol: str, source: str, at_ms: int, build: Callable[[], MarketPrice]) -> MarketPrice | None:
        if symbol not in self.symbols:
            return None
        key = (symbol, source)
        if at_ms <= self.latest.get(key, -1):
            self.duplicates += 1
            FEED_EVENTS.labels("duplicate").inc()
            return None
        event = build()
        self.latest[key] = at_ms
        return event

    async def _publish(self, events: list[MarketPrice]) -> None:
        await self.publish(events)
        self.published += len(events)
        FEED_EVENTS.labels("published").inc(len(events))
        for event in events:
            self.last_seen[event.symbol] = event.ts_event.timestamp()
        self._set_age()

    def _set_age(self) -> None:
        now = time.time()
        for symbol in self.symbols:
            seen = self.last_seen.get(symbol)
            if seen is not None:
                DATA_AGE.labels(symbol).set(max(0.0, now - seen))

    async def _age(self) -> None:
        while True:
            self._set_age()
            await asyncio.sleep(1)

    def age(self, symbol: str) -> float | None:
        seen = self.last_seen.get(symbol)
        return None if seen is None else time.time() - seen


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
