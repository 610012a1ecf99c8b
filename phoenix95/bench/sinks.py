"""Sink throughput: batched writes against the naive one-row-per-statement way, on the real stores."""

from __future__ import annotations

import gc
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg

from phoenix95.agents.ports import PriceObserved, SignalAnalyzed
from phoenix95.connectors.market_data import price_event
from phoenix95.schemas.convert import analyze
from phoenix95.schemas.signal_input import build_signal
from phoenix95.storage.postgres import Database, drop_schema, migrate
from phoenix95.storage.redis_state import RedisState
from phoenix95.storage.tables import writes_for
from phoenix95.storage.timeseries import TimeseriesSink, lines_for

BATCH = 500
_T0 = datetime(2024, 1, 1, tzinfo=UTC)


@contextmanager
def frozen_inputs() -> Iterator[None]:
    """Keep the benchmark's pre-built inputs (tens of thousands of facts, built before the clock
    starts) out of the garbage collector: a stage holds one batch at a time, while every full
    collection here would walk all of them (it cost the batched PostgreSQL path up to a third of its
    speed; the naive paths, bound by round trips, next to nothing)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def signal_facts(count: int) -> list[SignalAnalyzed]:
    facts = []
    for index in range(count):
        signal = build_signal(
            {
                "symbol": "BTCUSDT",
                "action": "buy" if index % 2 else "sell",
                "price": str(60000 + index % 500),
                "confidence": "0.8",
                "rsi": "45",
                "source_timestamp": (_T0 + timedelta(seconds=index)).isoformat(),
            },
            producer="bench",
            signal_id=str(uuid.uuid4()),
        )
        facts.append(SignalAnalyzed(signal, analyze(signal)))
    return facts


def price_facts(count: int, namespace: str) -> list[PriceObserved]:
    """Prices of a thousand symbols in turn, so a batch writes as many distinct cache keys (the price
    cache keeps one value per symbol: prices of one symbol would collapse into a single write)."""
    return [
        PriceObserved(
            price_event(
                symbol=f"B{index % 1000:04d}USDT",
                time=_T0 + timedelta(seconds=index),
                price=Decimal(60000 + index % 97),
                source="bench",
                namespace=namespace,
            )
        )
        for index in range(count)
    ]


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


async def postgres(url: str, *, rows: int, naive_rows: int, batch: int = BATCH, rounds: int = 3) -> dict[str, Any]:
    """Batched writes (the sink, `batch` rows per write: the stages' batch size) against the naive way,
    one INSERT per row in its own transaction, in `rounds` alternating rounds on one growing table, so
    a machine whose speed drifts during the run (fsync latency on a shared disk varies by 2x within
    minutes) moves both alike. Figures are medians of the rounds."""
    schema = "bench_" + uuid.uuid4().hex[:8]
    await migrate(url, schema)
    per_round, naive_per_round = max(1, rows // rounds), max(1, naive_rows // rounds)
    results: list[tuple[float, float]] = []
    try:
        facts = signal_facts((per_round + naive_per_round) * rounds)
        with frozen_inputs():
            async with (
                Database(url, schema=schema, max_size=2) as db,
                await psycopg.AsyncConnection.connect(url, autocommit=True) as connection,
            ):
                await connection.execute(f'SET search_path TO "{schema}"')
                for number in range(rounds):
                    offset = number * (per_round + naive_per_round)
                    batched = facts[offset : offset + per_round]
                    naive = facts[offset + per_round : offset + per_round + naive_per_round]
                    started = time.perf_counter()
                    for index in range(0, len(batched), batch):
                        failures = await db.write([writes_for(fact) for fact in batched[index : index + batch]])
                        assert not failures
                    batched_s = time.perf_counter() - started
                    # The naive way: one INSERT per row, each its own transaction (autocommit).
                    started = time.perf_counter()
                    for fact in naive:
                        for write in writes_for(fact):
                            await connection.execute(write.statement.sql, write.params)  # type: ignore[arg-type]
                    naive_s = time.perf_counter() - started
                    results.append((_rate(per_round, batched_s), _rate(naive_per_round, naive_s)))
                stored = (await db.fetch("SELECT COUNT(*) FROM signals"))[0][0]
        expected = (per_round + naive_per_round) * rounds
        assert stored == expected, f"expected {expected} rows, found {stored}"
    finally:
        await drop_schema(url, schema)
    value = statistics.median(rate for rate, _ in results)
    baseline = statistics.median(rate for _, rate in results)
    return {
        "value": round(value, 1),
        "unit": "rows/s",
        "baseline": {"naive_one_row_per_statement": round(baseline, 1)},
        "ratio": round(statistics.median(rate / naive for rate, naive in results if naive), 1),
        "rounds": [{"batched": rate, "naive": naive} for rate, naive in results],
        "rows": per_round * rounds,
        "naive_rows": naive_per_round * rounds,
        "batch": batch,
    }


async def redis(url: str, *, ops: int, naive_ops: int) -> dict[str, Any]:
    prefix = "bench" + uuid.uuid4().hex[:6] + ":s4:"
    state = RedisState.from_url(url, prefix=prefix)
    try:
        facts = price_facts(ops + naive_ops, "bench")
        with frozen_inputs():
            started = time.perf_counter()
            for index in range(0, ops, BATCH):
                await state.apply(facts[index : min(index + BATCH, ops)])
            batched_s = time.perf_counter() - started
            started = time.perf_counter()
            for fact in facts[ops:]:
                price = fact.price
                await state.client.setex(
                    state.keys.price(price.symbol, price.exchange) + ":naive", 60, str(price.price)
                )
            naive_s = time.perf_counter() - started
    finally:
        keys = [key async for key in state.client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await state.client.delete(*keys)
        await state.close()
    value, baseline = _rate(ops, batched_s), _rate(naive_ops, naive_s)
    return {
        "value": value,
        "unit": "ops/s",
        "baseline": {"one_command_per_round_trip": baseline},
        "ratio": round(value / baseline, 1) if baseline else None,
        "ops": ops,
        "batch": BATCH,
    }


async def timeseries(url: str | None, *, points: int, naive_points: int) -> dict[str, Any]:
    if not url:
        return {"value": None, "unit": "points/s", "skipped": "no time-series store configured"}
    namespace = "bench" + uuid.uuid4().hex[:6]
    sink = TimeseriesSink(url, token="bench", org="phoenix95", bucket="s4_market_data", namespace=namespace)
    try:
        facts = price_facts(points + naive_points, namespace)
        with frozen_inputs():
            lines = [line for fact in facts for line in lines_for(fact, namespace)]
            started = time.perf_counter()
            for index in range(0, points, 5000):
                await sink.write_lines(lines[index : min(index + 5000, points)])
            batched_s = time.perf_counter() - started
            started = time.perf_counter()
            for line in lines[points : points + naive_points]:
                await sink.write_lines([line])
            naive_s = time.perf_counter() - started
    finally:
        await sink.close()
    value, baseline = _rate(points, batched_s), _rate(naive_points, naive_s)
    return {
        "value": value,
        "unit": "points/s",
        "baseline": {"one_point_per_request": baseline},
        "ratio": round(value / baseline, 1) if baseline else None,
        "points": points,
        "batch": 5000,
    }
