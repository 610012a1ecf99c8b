"""Where a replay's events come from: signal files (JSONL/CSV), the `signals` table, a time range of a
topic; prices from candle files, a topic, or the simulated feed."""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from phoenix95.connectors.market_data import GbmFeed, bundled_candle_file, candle_ticks, parse_interval, read_candles
from phoenix95.domain import ids
from phoenix95.domain.config import DEFAULT_SYMBOL_RULES
from phoenix95.domain.execution import MarketTick
from phoenix95.schemas.messages import Signal
from phoenix95.schemas.signal_input import InvalidSignal, build_signal

_CANDLE_FILE = re.compile(r"(?P<symbol>[A-Z0-9]{3,20})-(?P<interval>\d+[mhd])")


class SourceError(ValueError):
    """A replay source that cannot be read (said in plain words)."""


@dataclass(frozen=True)
class BadLine:
    line: int
    error: str


def read_signals_file(path: Path) -> tuple[list[Signal], list[BadLine]]:
    """Signals from JSON lines or CSV. Ids default to the file and line (stable across runs)."""
    if not path.is_file():
        raise SourceError(f"no such signals file: {path}")
    text = path.read_text(encoding="utf-8")
    rows: Iterator[tuple[int, dict[str, Any]]]
    if path.suffix.lower() == ".csv":
        rows = ((index + 2, row) for index, row in enumerate(csv.DictReader(io.StringIO(text))))
    else:
        rows = _json_lines(text)
    signals, bad = [], []
    for line, payload in rows:
        if "__error__" in payload:
            bad.append(BadLine(line, str(payload["__error__"])))
            continue
        clean = {k: v for k, v in payload.items() if v not in (None, "")}
        try:
            signals.append(
                build_signal(
                    clean,
                    producer="replay",
                    signal_id=ids.derive("replay-signal", path.name, line),
                    default_source="replay",
                )
            )
        except InvalidSignal as error:
            bad.append(BadLine(line, str(error)))
    signals.sort(key=lambda s: (s.ts_event, s.event_id))
    return signals, bad


def _json_lines(text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        try:
            value = json.loads(raw)
        except ValueError as error:
            yield number, {"__error__": f"invalid JSON: {error}"}
            continue
        yield number, value if isinstance(value, dict) else {"__error__": "not a JSON object"}


def read_price_file(path: Path | str, *, symbol: str | None = None, interval: str | None = None) -> list[MarketTick]:
    """Candles (`date,open,high,low,close,volume`) as ticks; symbol and interval from the file name
    (e.g. XRPUSDT-5m-futures_last.csv.gz) unless given. A bare name reads the bundled data, and
    `SYMBOL-INTERVAL` (XRPUSDT-5m) names the bundled last-price candles of that symbol."""
    if isinstance(path, str) and "/" not in path and not Path(path).exists():
        short = re.fullmatch(r"([A-Z0-9]+)-(\d+[mhdw])", path)
        bundled = bundled_candle_file(short[1], short[2]) if short else None
        if bundled is not None:
            path = bundled
    name = Path(path).name
    match = _CANDLE_FILE.match(name)
    symbol = symbol or (match["symbol"] if match else None)
    interval = interval or (match["interval"] if match else None)
    if not symbol or not interval:
        raise SourceError(f"cannot tell the symbol and interval of {name}: name it SYMBOL-INTERVAL-... or pass them")
    try:
        candles = read_candles(path if isinstance(path, str) and "/" not in path else Path(path))
    except (OSError, KeyError, ValueError) as error:
        raise SourceError(f"cannot read candles from {path}: {error}") from error
    return candle_ticks(symbol, candles, interval)


def simulated_prices(
    spec: str, *, start: datetime, end: datetime, interval: str = "5m", seed: int = 95
) -> list[MarketTick]:
    """`SYMBOL:START_PRICE[:ANNUAL_VOLATILITY]` as a seeded geometric Brownian motion over [start, end]."""
    parts = spec.split(":")
    if len(parts) not in (2, 3):
        raise SourceError(f"--simulate wants SYMBOL:START_PRICE[:VOLATILITY], got {spec!r}")
    symbol = parts[0].upper()
    step = parse_interval(interval)
    count = max(1, int((end - start) / step))
    tick = DEFAULT_SYMBOL_RULES.get(symbol)
    feed = GbmFeed(
        symbol,
        Decimal(parts[1]),
        start,
        interval=step,
        annual_volatility=float(parts[2]) if len(parts) == 3 else 0.8,
        seed=seed,
        tick_size=tick.tick_size if tick else Decimal("0.0001"),
    )
    return feed.ticks(count)


def signal_from_row(row: dict[str, Any]) -> Signal:
    """A `signals` table row back into the signal message (for replaying what was recorded)."""
    raw = row.get("raw_data")
    fields = {
        "symbol": row["symbol"],
        "action": row["action"],
        "price": str(row["price"]),
        "confidence": str(row["confidence"]),
        "strategy": row["strategy"],
        "timeframe": row["timeframe"],
        "source": row["source"],
        "source_timestamp": (row["source_timestamp"] or row["received_at"]).isoformat(),
    }
    for key in ("rsi", "macd", "volume"):
        if row.get(key) is not None:
            fields[key] = str(row[key])
    if raw:
        fields["raw"] = json.dumps(raw, sort_keys=True)
    return build_signal(
        fields, producer="replay", signal_id=row["signal_id"], ts_ingest=row["received_at"], default_source="replay"
    )


async def signals_from_table(url: str, schema: str, *, start: datetime | None, until: datetime | None) -> list[Signal]:
    from phoenix95.storage.postgres import Database

    clauses, params = ["TRUE"], []
    if start is not None:
        clauses.append("COALESCE(source_timestamp, received_at) >= %s")
        params.append(start)
    if until is not None:
        clauses.append("COALESCE(source_timestamp, received_at) < %s")
        params.append(until)
    columns = (
        "signal_id",
        "symbol",
        "action",
        "price",
        "confidence",
        "strategy",
        "timeframe",
        "rsi",
        "macd",
        "volume",
        "source",
        "source_timestamp",
        "received_at",
        "raw_data",
    )
    async with Database(url, schema=schema) as db:
        rows = await db.fetch(
            f"SELECT {', '.join(columns)} FROM signals WHERE {' AND '.join(clauses)} ORDER BY COALESCE(source_timestamp, received_at)",
            params,
        )
    return [signal_from_row(dict(zip(columns, row, strict=True))) for row in rows]


@dataclass
class TopicRead:
    """A time range of a topic: the decoded events in it, and what reading it took (the offset each
    partition started at, the records read from each, the fetches the time lookup made)."""

    topic: str
    events: list[Any] = field(default_factory=list)
    start_offsets: dict[int, int] = field(default_factory=dict)
    end_offsets: dict[int, int] = field(default_factory=dict)
    records_read: dict[int, int] = field(default_factory=dict)
    undecodable: int = 0
    lookup_fetches: int = 0

    def stats(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "events": len(self.events),
            "records_read": sum(self.records_read.values()),
            "undecodable": self.undecodable,
            "start_offsets": {str(p): o for p, o in sorted(self.start_offsets.items())},
            "end_offsets": {str(p): o for p, o in sorted(self.end_offsets.items())},
            "records_read_by_partition": {str(p): n for p, n in sorted(self.records_read.items())},
            "lookup_fetches": self.lookup_fetches,
        }


def in_range(event_time: datetime, start: datetime | None, until: datetime | None) -> bool:
    return (start is None or event_time >= start) and (until is None or event_time < until)


def past_until(record_timestamp_ms: int, event_time: datetime, until: datetime | None) -> bool:
    """Whether a partition is read past `until` at this record: both its timestamp (when it was
    written) and its event time are at or after it. A record written late (event before `until`,
    timestamp after) does not stop the read; the next one that happened after `until` does."""
    if until is None:
        return False
    return record_timestamp_ms >= int(until.timestamp() * 1000) and event_time >= until


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    start: datetime | None,
    until: datetime | None,
    codec: Any = None,
    stall_timeout: float = 30.0,
) -> TopicRead:
    """The decoded events of a topic whose event time is in [start, until), without a consumer group.

    Each partition is read from the first record whose timestamp is at or after `start`, found by
    the tap's time search (the broker's offset-for-time answer, checked with a fetch and otherwise
    binary-searched: Tansu's answer is wrong, see `tap.positions`); a record is written at or after
    the time of its event, so nothing in the range comes before that offset. A partition is read
    up to its end, or until the first record past `until` (see `past_until`)."""
    from aiokafka import AIOKafkaConsumer

    from phoenix95.schemas.codec import Codec
    from phoenix95.tap.plan import OffsetLookup
    from phoenix95.tap.positions import to_ms

    codec = codec or Codec()
    decode = _decoder(topic, codec)
    read = TopicRead(topic)
    async with OffsetLookup(bootstrap) as lookup:
        partitions = await lookup.partitions([topic])
        if not partitions:
            raise SourceError(f"topic {topic} does not exist")
        bounds = await lookup.bounds(partitions)
        for tp in partitions:
            bound = bounds[tp]
            offset = bound.beginning if start is None else await lookup.offset_for_time(tp, to_ms(start), bound)
            read.start_offsets[tp.partition] = offset
            read.end_offsets[tp.partition] = bound.end
            read.records_read[tp.partition] = 0
        read.lookup_fetches = lookup.fetches
    pending = {tp for tp in partitions if read.start_offsets[tp.partition] < read.end_offsets[tp.partition]}
    if not pending:
        return read
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        client_id="p95-replay-source",
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=8 << 20,
    )
    await consumer.start()
    try:
        consumer.assign(sorted(pending))
        for tp in pending:
            consumer.seek(tp, read.start_offsets[tp.partition])
        deadline = time.monotonic() + stall_timeout
        while pending:
            if time.monotonic() > deadline:
                left = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(pending))
                raise SourceError(f"reading {left} made no progress for {stall_timeout:.0f}s")
            batches = await consumer.getmany(*pending, timeout_ms=500)
            done = []
            for tp, records in batches.items():
                if tp not in pending or not records:
                    continue
                deadline = time.monotonic() + stall_timeout
                first, end = read.start_offsets[tp.partition], read.end_offsets[tp.partition]
                for record in records:
                    if record.offset < first:
                        continue
                    if record.offset >= end:
                        done.append(tp)
                        break
                    read.records_read[tp.partition] += 1
                    item = decode(record)
                    if item is None:
                        read.undecodable += 1
                    elif past_until(record.timestamp, item.ts_event, until):
                        done.append(tp)
                        break
                    elif in_range(item.ts_event, start, until):
                        read.events.append(item)
                    if record.offset >= end - 1:
                        done.append(tp)
                        break
            if done:
                pending.difference_update(done)
                consumer.pause(*done)
    finally:
        await consumer.stop()
    read.events.sort(key=lambda e: (e.ts_event, e.event_id))
    return read


def _decoder(topic: str, codec: Any) -> Callable[[Any], Any]:
    """Record -> event (None when it cannot be decoded): prices on a prices topic, else signals
    (Avro in either framing, or JSON)."""
    from phoenix95.schemas.codec import DecodeError
    from phoenix95.schemas.messages import MarketPrice
    from phoenix95.schemas.topics import MARKET_PRICES

    prices = topic.endswith(MARKET_PRICES)

    def decode(record: Any) -> Any:
        if record.value is None:
            return None
        try:
            if prices:
                return codec.decode(record.value, MarketPrice, headers=record.headers)
            return codec.decode_signal(
                record.value,
                headers=record.headers,
                fallback_id=ids.derive("json-signal", record.topic, record.partition, record.offset),
            )
        except DecodeError:
            return None

    return decode


def span(signals: list[Signal], prices: list[MarketTick]) -> tuple[datetime, datetime]:
    times = [s.ts_event for s in signals] + ([prices[0].time, prices[-1].time] if prices else [])
    if not times:
        raise SourceError("nothing to replay: no signals and no prices")
    return min(times) - timedelta(hours=1), max(times) + timedelta(hours=1)
