"""Market data: replay of recorded Binance candles and a simulated feed (seeded geometric Brownian
motion) for symbols with no data. Both are a `MarketDataFeed`: they yield `MarketPrice` events with
event time, and a live exchange feed can be added behind the same protocol.

A candle becomes one price event at its *close* time (open time + interval): its close is only known
then, so a replay never trades on a price before it existed. High and low travel with it, so
stop-losses and take-profits inside the candle are seen.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import math
import random
import re
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Protocol, runtime_checkable

from phoenix95.domain import ids
from phoenix95.domain.execution import MarketTick
from phoenix95.schemas.envelope import utc_now
from phoenix95.schemas.messages import MarketPrice

_BUNDLED = "phoenix95.data.market"
_FILE = re.compile(r"^(?P<symbol>[A-Z0-9]+)-(?P<interval>\d+[mhd])-(?P<market>[a-z_]+)\.csv(\.gz)?$")


@runtime_checkable
class MarketDataFeed(Protocol):
    """Where the prices of one symbol come from: recorded candles (`CandleReplay`), a simulation
    (`GbmFeed`), later a live exchange stream.

    `prices` yields `MarketPrice` events in event-time order, each stamped with its event time and
    ready for p95.market.prices. It ends when a finite feed runs out or after `limit` events; an
    endless feed (simulated, live) runs until then or until the consumer stops iterating.
    """

    @property
    def symbol(self) -> str: ...

    @property
    def source(self) -> str:
        """The `source` field of its events: candles, simulated, or the exchange's name."""
        ...

    def prices(self, *, limit: int | None = None, namespace: str = "") -> AsyncIterator[MarketPrice]: ...


@dataclass(frozen=True)
class Candle:
    time: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal | None


def parse_interval(text: str) -> timedelta:
    unit = text[-1]
    value = int(text[:-1])
    return {"m": timedelta(minutes=value), "h": timedelta(hours=value), "d": timedelta(days=value)}[unit]


def _parse_time(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _read_text(path: str | Path) -> str:
    raw = (
        resources.files(_BUNDLED).joinpath(str(path)).read_bytes()
        if isinstance(path, str) and "/" not in path
        else Path(path).read_bytes()
    )
    return gzip.decompress(raw).decode() if raw[:2] == b"\x1f\x8b" else raw.decode()


def read_candles(path: str | Path) -> list[Candle]:
    """Read `date,open,high,low,close,volume` CSV (optionally gzip); a bare name means bundled data."""
    candles = []
    for row in csv.DictReader(io.StringIO(_read_text(path))):
        volume = row.get("volume") or ""
        candles.append(
            Candle(
                time=_parse_time(row["date"]),
                open=Decimal(row["open"]),
                high=Decimal(row["high"]),
                low=Decimal(row["low"]),
                close=Decimal(row["close"]),
                volume=Decimal(volume) if volume.strip() else None,
            )
        )
    candles.sort(key=lambda c: c.time)
    return candles


def read_funding(path: str | Path) -> list[tuple[datetime, Decimal]]:
    return [
        (_parse_time(row["date"]), Decimal(row["funding_rate"]))
        for row in csv.DictReader(io.StringIO(_read_text(path)))
    ]


def bundled_files() -> list[str]:
    return sorted(
        entry.name for entry in resources.files(_BUNDLED).iterdir() if entry.name.endswith((".csv", ".csv.gz"))
    )


def bundled_funding() -> dict[str, list[tuple[datetime, Decimal]]]:
    funding: dict[str, list[tuple[datetime, Decimal]]] = {}
    for name in bundled_files():
        match = _FILE.match(name)
        if match and match["market"] == "funding_rate":
            funding.setdefault(match["symbol"], []).extend(read_funding(name))
    return funding


def price_event(
    *,
    symbol: str,
    time: datetime,
    price: Decimal,
    source: str,
    interval: str | None = None,
    open_: Decimal | None = None,
    high: Decimal | None = None,
    low: Decimal | None = None,
    volume: Decimal | None = None,
    mark_price: Decimal | None = None,
    funding_rate: Decimal | None = None,
    namespace: str = "",
) -> MarketPrice:
    event_id = ids.derive("market-price", namespace, symbol, source, time.isoformat())
    return MarketPrice.trusted(
        event_id=event_id,
        correlation_id=event_id,
        causation_id=None,
        ts_event=time,
        ts_ingest=utc_now(),
        schema_version=MarketPrice.SCHEMA_VERSION,
        producer="market-data",
        symbol=symbol,
        exchange="binance",
        market_type="futures",
        price=price,
        mark_price=mark_price,
        bid=None,
        ask=None,
        open=open_,
        high=high,
        low=low,
        volume=volume,
        interval=interval,
        funding_rate=funding_rate,
        source=source,
    )


def candle_ticks(
    symbol: str, candles: Iterable[Candle], interval: str, *, shift: timedelta = timedelta(0)
) -> list[MarketTick]:
    """Candles as the domain's price ticks (the in-process replay's fast path: no messages)."""
    step = parse_interval(interval) + shift
    return [MarketTick(symbol, c.time + step, c.close, None, c.open, c.high, c.low, c.volume) for c in candles]


def tick_event(
    tick: MarketTick, *, source: str = "candles", interval: str | None = None, namespace: str = ""
) -> MarketPrice:
    """The message of a price tick (for publishing a replay to Kafka)."""
    return price_event(
        symbol=tick.symbol,
        time=tick.time,
        price=tick.price,
        source=source,
        interval=interval,
        open_=tick.open,
        high=tick.high,
        low=tick.low,
        volume=tick.volume,
        mark_price=tick.mark_price,
        funding_rate=tick.funding_rate,
        namespace=namespace,
    )


def candle_events(
    symbol: str,
    candles: Iterable[Candle],
    interval: str,
    *,
    shift: timedelta = timedelta(0),
    source: str = "candles",
    namespace: str = "",
) -> Iterator[MarketPrice]:
    """Candles as price events at their close time (shifted by `shift`, e.g. to bring them to now)."""
    step = parse_interval(interval)
    for candle in candles:
        yield price_event(
            symbol=symbol,
            time=candle.time + step + shift,
            price=candle.close,
            source=source,
            interval=interval,
            open_=candle.open,
            high=candle.high,
            low=candle.low,
            volume=candle.volume,
            namespace=namespace,
        )


def bundled_candle_events(
    symbol: str = "XRPUSDT", interval: str = "5m", *, shift: timedelta = timedelta(0), namespace: str = ""
) -> list[MarketPrice]:
    return list(CandleReplay.bundled(symbol, interval, shift=shift).events(namespace=namespace))


def bundled_candle_file(symbol: str, interval: str | None = None) -> str | None:
    """The bundled last-price candle file of a symbol (of `interval`, else the shortest), if any."""
    found = []
    for name in bundled_files():
        match = _FILE.match(name)
        if not match or match["symbol"] != symbol or match["market"] != "futures_last":
            continue
        if interval is None or match["interval"] == interval:
            found.append((parse_interval(match["interval"]), name))
    return min(found)[1] if found else None


@dataclass(frozen=True)
class CandleReplay:
    """Recorded candles of one symbol, replayed as price events at their close time."""

    symbol: str
    candles: tuple[Candle, ...]
    interval: str = "5m"
    shift: timedelta = timedelta(0)
    source: str = "candles"

    @classmethod
    def bundled(cls, symbol: str, interval: str | None = "5m", *, shift: timedelta = timedelta(0)) -> CandleReplay:
        """The bundled candles of the symbol (of `interval`; None: the shortest interval there is)."""
        name = bundled_candle_file(symbol, interval)
        match = _FILE.match(name) if name is not None else None
        if name is None or match is None:
            raise FileNotFoundError(f"no bundled {interval + ' ' if interval else ''}candles for {symbol}")
        return cls(symbol, tuple(read_candles(name)), match["interval"], shift)

    def events(self, *, namespace: str = "") -> Iterator[MarketPrice]:
        return candle_events(
            self.symbol, self.candles, self.interval, shift=self.shift, source=self.source, namespace=namespace
        )

    def ticks(self) -> list[MarketTick]:
        return candle_ticks(self.symbol, self.candles, self.interval, shift=self.shift)

    async def prices(self, *, limit: int | None = None, namespace: str = "") -> AsyncIterator[MarketPrice]:
        for event in itertools.islice(self.events(namespace=namespace), limit):
            yield event


@dataclass(frozen=True)
class GbmFeed:
    """Seeded geometric Brownian motion: reproducible prices for a symbol without recorded data."""

    symbol: str
    start_price: Decimal
    start_time: datetime
    interval: timedelta = timedelta(minutes=5)
    annual_volatility: float = 0.8
    annual_drift: float = 0.0
    seed: int = 95
    tick_size: Decimal = Decimal("0.01")

    def candles(self, count: int) -> Iterator[Candle]:
        rng = random.Random(f"{self.seed}:{self.symbol}")
        dt = self.interval.total_seconds() / (365 * 24 * 3600)
        sigma = self.annual_volatility
        drift = (self.annual_drift - 0.5 * sigma * sigma) * dt
        diffusion = sigma * math.sqrt(dt)
        price = float(self.start_price)
        for index in range(count):
            open_price = price
            # four sub-steps per candle give a high/low range
            path = [price]
            for _ in range(4):
                price *= math.exp(drift / 4 + diffusion / 2 * rng.gauss(0.0, 1.0))
                path.append(price)
            yield Candle(
                time=self.start_time + self.interval * index,
                open=self._dec(open_price),
                high=self._dec(max(path)),
                low=self._dec(min(path)),
                close=self._dec(price),
                volume=None,
            )

    @property
    def interval_text(self) -> str:
        return f"{int(self.interval.total_seconds() // 60)}m"

    def events(self, count: int, *, namespace: str = "") -> Iterator[MarketPrice]:
        return candle_events(
            self.symbol, self.candles(count), self.interval_text, source=self.source, namespace=namespace
        )

    def ticks(self, count: int) -> list[MarketTick]:
        return candle_ticks(self.symbol, self.candles(count), self.interval_text)

    @property
    def source(self) -> str:
        return "simulated"

    async def prices(self, *, limit: int | None = None, namespace: str = "") -> AsyncIterator[MarketPrice]:
        """Endless unless `limit` is given."""
        for event in self.events(limit if limit is not None else _ENDLESS, namespace=namespace):
            yield event

    def _dec(self, value: float) -> Decimal:
        # on the tick grid, and never below one tick: a price must stay positive
        return max((Decimal(repr(value)) / self.tick_size).to_integral_value(), Decimal(1)) * self.tick_size


_ENDLESS = 2**62


def merge_by_time(*streams: Iterable[MarketPrice]) -> list[MarketPrice]:
    merged = [event for stream in streams for event in stream]
    merged.sort(key=lambda e: (e.ts_event, e.symbol))
    return merged
