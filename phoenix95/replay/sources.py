"""Where a replay's events come from: signal files (JSONL/CSV), the `signals` table, a time range of a
topic; prices from candle files, a topic, or the simulated feed."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from phoenix95.connectors.market_data import GbmFeed, candle_ticks, parse_interval, read_candles
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
    (e.g. XRPUSDT-5m-futures_last.csv.gz) unless given. A bare name reads the bundled data."""
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


async def from_topic(
    bootstrap: str, topic: str, *, start: datetime | None, until: datetime | None, codec: Any = None
) -> list[Any]:
    """Decoded messages of a topic's time range (offset-for-time per partition; no consumer group)."""
    from aiokafka import AIOKafkaConsumer

    from phoenix95.schemas.codec import Codec, DecodeError
    from phoenix95.schemas.messages import MarketPrice
    from phoenix95.streams.admin import end_offsets, partitions_of

    codec = codec or Codec()
    ends = await end_offsets(bootstrap, [topic])
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=8 << 20
    )
    await consumer.start()
    found: list[Any] = []
    try:
        partitions = await partitions_of(consumer, [topic])
        if not partitions:
            raise SourceError(f"topic {topic} does not exist")
        consumer.assign(partitions)
        for tp in partitions:
            offset = 0
            if start is not None:
                looked_up = await consumer.offsets_for_times({tp: int(start.timestamp() * 1000)})
                offset = looked_up[tp].offset if looked_up.get(tp) is not None else ends.get(tp, 0)
            consumer.seek(tp, offset)
        remaining = {tp for tp in partitions if ends.get(tp, 0) > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000)
            if not batches:
                break
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= ends[tp] - 1:
                        remaining.discard(tp)
                    if record.value is None:
                        continue
                    try:
                        if topic.endswith("p95.market.prices"):
                            item: Any = codec.decode(record.value, MarketPrice)
                        else:
                            item = codec.decode_signal(
                                record.value,
                                headers=record.headers,
                                fallback_id=ids.derive("json-signal", record.topic, record.partition, record.offset),
                            )
                    except DecodeError:
                        continue
                    if until is not None and item.ts_event >= until:
                        continue
                    if start is not None and item.ts_event < start:
                        continue
                    found.append(item)
    finally:
        await consumer.stop()
    found.sort(key=lambda e: (e.ts_event, e.event_id))
    return found


def span(signals: list[Signal], prices: list[MarketTick]) -> tuple[datetime, datetime]:
    times = [s.ts_event for s in signals] + ([prices[0].time, prices[-1].time] if prices else [])
    if not times:
        raise SourceError("nothing to replay: no signals and no prices")
    return min(times) - timedelta(hours=1), max(times) + timedelta(hours=1)
