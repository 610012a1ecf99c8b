"""End-to-end throughput and latency of the real pipeline: the four stage workers, every sink on."""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from phoenix95.connectors.market_data import GbmFeed, tick_event
from phoenix95.schemas.codec import Codec
from phoenix95.schemas.messages import MarketPrice, Signal
from phoenix95.schemas.signal_input import build_signal
from phoenix95.schemas.topics import Topics
from phoenix95.settings import Settings

SYMBOLS = {
    "BTCUSDT": (Decimal("60000"), Decimal("0.1")),
    "ETHUSDT": (Decimal("3000"), Decimal("0.01")),
    "SOLUSDT": (Decimal("100"), Decimal("0.01")),
    "XRPUSDT": (Decimal("0.6"), Decimal("0.0001")),
}
#: Limits opened up so that a share of the signals trades, with small sizes and short lives (tight
#: stop and target, ten-minute expiry): open positions stay few, as in real use, so the load is the
#: signals and not a pile of positions marked on every price.
TRADING_ENV = {
    "P95_RISK__MAX_OPEN_POSITIONS": "1000000",
    "P95_RISK__MAX_POSITION_FRACTION": "0.002",
    "P95_RISK__MAX_ORDERS_PER_MINUTE": "1000000",
    "P95_RISK__DUPLICATE_WINDOW_S": "0",
    "P95_RISK__MAX_EXPOSURE_PER_SYMBOL": "1000000000",
    "P95_RISK__MAX_HOLD_HOURS": "0.1667",
    "P95_RISK__STOP_LOSS_PCT": "0.002",
    "P95_RISK__TAKE_PROFIT_PCT": "0.002",
    "P95_EXECUTION__QUIET_FEED_FILL_AFTER_S": "3",
    # the protections off: the load must stay the same all run (on the event clock the risk stage
    # applies them, and stops this tight would lock a symbol after five stop-losses within the hour)
    "P95_COMPLIANCE__STOPLOSS_GUARD_COUNT": "0",
    "P95_COMPLIANCE__DAILY_LOSS_LIMIT_PCT": "0",
    "P95_COMPLIANCE__MAX_DRAWDOWN_PCT": "0",
}


def _signal(symbol: str, price: Decimal, at: datetime, rng: random.Random, strategy: str = "bench") -> Signal:
    return build_signal(
        {
            "symbol": symbol,
            "action": rng.choice(["buy", "sell"]),
            "price": str(price),
            "confidence": rng.choice(["0.3", "0.85", "0.9", "0.95"]),
            "strategy": strategy,
            "timeframe": "1m",
            "source_timestamp": at.isoformat(),
        },
        producer="bench",
        signal_id=str(uuid.uuid4()),
    )


def event_time_workload(count: int, namespace: str, *, start: datetime) -> tuple[list[Signal], list[MarketPrice]]:
    """`count` signals over four symbols, each minute of event time one price per symbol."""
    rng = random.Random(95)
    minutes = max(60, count // 4)
    prices: list[MarketPrice] = []
    for symbol, (first, tick) in SYMBOLS.items():
        feed = GbmFeed(symbol, first, start, interval=timedelta(minutes=1), tick_size=tick, seed=3)
        prices.extend(
            tick_event(t, source="simulated", interval="1m", namespace=namespace) for t in feed.ticks(minutes)
        )
    prices.sort(key=lambda p: (p.ts_event, p.symbol))
    last = {p.symbol: p.price for p in prices[: len(SYMBOLS)]}
    signals = []
    index = 0
    for i in range(count):
        at = start + timedelta(minutes=minutes * (i + 0.5) / count)
        while index < len(prices) and prices[index].ts_event <= at:
            last[prices[index].symbol] = prices[index].price
            index += 1
        symbol = list(SYMBOLS)[i % len(SYMBOLS)]
        signals.append(_signal(symbol, last[symbol], at, rng))
    return signals, prices


class BenchPipeline:
    """Four stage workers in a namespace of their own."""

    def __init__(self, base: Settings, env: dict[str, str]):
        from phoenix95.replay.kafka_mode import new_run_id, run_environment

        self.run_id = new_run_id()
        self.env = {**run_environment(base, self.run_id, {}), **TRADING_ENV, **env}
        self.saved = {key: os.environ.get(key) for key in self.env}
        os.environ.update(self.env)
        self.settings = Settings()
        self.topics = Topics(self.settings.namespace)
        from phoenix95.streams.stages import STAGES
        from phoenix95.streams.supervisor import WorkerSet

        # P95_BENCH_WORKER_LOG=info: the workers log their batch statistics (time in process, persist
        # and publish) every few seconds, in the run's log directory
        self.workers = WorkerSet(
            STAGES,
            env=self.env,
            log_dir=self.settings.home / "logs" / self.run_id,
            log_level=os.environ.get("P95_BENCH_WORKER_LOG", "warn"),
        )

    def __enter__(self) -> BenchPipeline:
        from phoenix95.streams.wiring import prepare

        prepare(self.settings)
        self.workers.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.workers.stop()
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    async def publish(self, events: Sequence[Any], *, chunk: int = 1000) -> None:
        from phoenix95.streams.producer import EventProducer

        producer = EventProducer(self.settings.kafka.bootstrap_servers, self.topics, Codec.for_settings(self.settings))
        await producer.start()
        try:
            for index in range(0, len(events), chunk):
                await producer.publish(list(events[index : index + chunk]))
        finally:
            await producer.stop()

    async def counts(self) -> tuple[int, int, int, int, int]:
        from phoenix95.storage.postgres import Database

        async with Database(self.settings.postgres_url(), schema=self.settings.postgres.db_schema) as db:
            rows = await db.fetch(
                """SELECT (SELECT COUNT(*) FROM risk_verdicts),
                          (SELECT COUNT(*) FROM risk_verdicts WHERE decision = 'APPROVED'),
                          (SELECT COUNT(*) FROM orders),
                          (SELECT COUNT(*) FROM orders WHERE status = 'filled' AND intent = 'open'),
                          (SELECT COUNT(*) FROM positions)"""
            )
        return rows[0]

    async def until_done(self, signals: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            verdicts, approved, orders, filled, positions = await self.counts()
            if verdicts >= signals and orders >= approved and positions >= filled:
                return
            self.workers.restart_dead()
            await asyncio.sleep(0.2)
        raise TimeoutError(f"the pipeline did not finish {signals} signals within {timeout:.0f}s")

    async def warm_up(self, timeout: float = 120.0) -> None:
        """One signal through every stage: the workers have joined their groups."""
        start = datetime(2020, 1, 1, tzinfo=UTC)
        signal = _signal("BTCUSDT", Decimal("60000"), start, random.Random(1)).model_copy(
            update={"confidence": Decimal("0.95")}
        )
        prices = [
            tick_event(t, source="simulated", interval="1m", namespace=self.settings.namespace)
            for t in GbmFeed("BTCUSDT", Decimal("60000"), start, interval=timedelta(minutes=1), seed=9).ticks(3)
        ]
        await self.publish([signal, *prices])
        await self.until_done(1, timeout)


def e2e_throughput(base: Settings, *, signals: int, timeout: float = 900.0) -> dict[str, Any]:
    with BenchPipeline(base, {"P95_RISK__CLOCK": "event"}) as pipeline:
        return asyncio.run(_e2e_throughput(pipeline, signals, timeout))


async def _e2e_throughput(pipeline: BenchPipeline, signals: int, timeout: float) -> dict[str, Any]:
    await pipeline.warm_up()
    start = datetime(2022, 1, 1, tzinfo=UTC)
    batch, prices = event_time_workload(signals, pipeline.settings.namespace, start=start)
    timeline = sorted([*batch, *prices], key=lambda e: (e.ts_event, 0 if isinstance(e, Signal) else 1))
    started = time.perf_counter()
    await pipeline.publish(timeline)
    published = time.perf_counter() - started
    await pipeline.until_done(signals + 1, timeout)
    elapsed = time.perf_counter() - started
    _verdicts, approved, orders, _filled, positions = await pipeline.counts()
    return {
        "value": round(signals / elapsed, 1),
        "unit": "signals/s",
        "signals": signals,
        "prices": len(prices),
        "events_per_s": round((signals + len(prices)) / elapsed, 1),
        "approved": approved - 1,
        "orders": orders - 1,
        "positions": positions - 1,
        "publish_s": round(published, 2),
        "elapsed_s": round(elapsed, 2),
        "run_id": pipeline.run_id,
    }


def _percentiles(values: list[float]) -> dict[str, float | int | None]:
    """p50/p99/max/mean in ms; an unfinished item (inf) makes the figures it reaches None."""
    ordered = sorted(values)
    if not ordered:
        return {}

    def ms(value: float) -> float | None:
        return round(value * 1000, 1) if value != float("inf") else None

    finite = [v for v in ordered if v != float("inf")]
    return {
        "p50": ms(ordered[len(ordered) // 2]),
        "p99": ms(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]),
        "max": ms(ordered[-1]),
        "mean": round(statistics.fmean(finite) * 1000, 1) if len(finite) == len(ordered) else None,
        "count": len(ordered),
    }


LATENCY_MAX_OPEN = 100


def latency(
    base: Settings,
    *,
    rate: float,
    seconds: float,
    price_interval: float = 0.05,
    symbols: dict[str, tuple[Decimal, Decimal]] | None = None,
) -> dict[str, Any]:
    """Signal -> order and signal -> position opened, at a fixed offered load, on the wall clock; a
    price per symbol every 50 ms keeps "the next market price" close. Measured from the timestamps the
    pipeline itself recorded (signal ts_ingest, the order's and the position's ts_ingest). Every
    signal is confident; the book holds at most LATENCY_MAX_OPEN positions, so the load is the
    signals and not a book that grows by 200 positions a second."""
    env = {
        "P95_RISK__CLOCK": "wall",
        "P95_RISK__MAX_PIPELINE_LAG_S": "600",
        "P95_RISK__MAX_OPEN_POSITIONS": str(LATENCY_MAX_OPEN),
    }
    with BenchPipeline(base, env) as pipeline:
        return asyncio.run(_latency(pipeline, rate, seconds, price_interval, symbols or SYMBOLS))


async def _latency(
    pipeline: BenchPipeline,
    rate: float,
    seconds: float,
    price_interval: float,
    symbols: dict[str, tuple[Decimal, Decimal]],
) -> dict[str, Any]:
    from phoenix95.streams.producer import EventProducer

    producer = EventProducer(
        pipeline.settings.kafka.bootstrap_servers, pipeline.topics, Codec.for_settings(pipeline.settings)
    )
    await producer.start()
    rng = random.Random(7)
    prices = {s: first for s, (first, _) in symbols.items()}
    ticks = {s: tick for s, (_, tick) in symbols.items()}
    sent = 0
    try:
        # warm up: the workers join their groups and see prices
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            await producer.publish(_prices(prices, ticks, rng, pipeline.settings.namespace))
            await producer.publish(
                [
                    _signal("BTCUSDT", prices["BTCUSDT"], datetime.now(UTC), rng, "bench-warmup").model_copy(
                        update={"confidence": Decimal("0.95")}
                    )
                ]
            )
            await asyncio.sleep(0.5)
            if (await pipeline.counts())[4] >= 1:
                break
        started = time.perf_counter()
        interval = 1.0 / rate
        next_signal = started
        next_price = started
        while time.perf_counter() - started < seconds:
            now = time.perf_counter()
            if now >= next_price:
                await producer.publish(_prices(prices, ticks, rng, pipeline.settings.namespace))
                next_price += price_interval
            due = int((now - next_signal) / interval) + 1 if now >= next_signal else 0
            if due:
                batch = []
                for _ in range(due):
                    symbol = rng.choice(list(symbols))
                    batch.append(
                        _signal(symbol, prices[symbol], datetime.now(UTC), rng).model_copy(
                            update={"confidence": Decimal("0.95")}
                        )
                    )
                await producer.publish(batch)
                sent += len(batch)
                next_signal += due * interval
            await asyncio.sleep(min(0.002, max(0.0, min(next_signal, next_price) - time.perf_counter())))
        stop_publishing = time.perf_counter()
        while time.perf_counter() - stop_publishing < 5:
            await producer.publish(_prices(prices, ticks, rng, pipeline.settings.namespace))
            await asyncio.sleep(price_interval)
    finally:
        await producer.stop()
    await asyncio.sleep(3)
    from phoenix95.storage.postgres import Database

    async with Database(pipeline.settings.postgres_url(), schema=pipeline.settings.postgres.db_schema) as db:
        # every measured signal (the warm-up ones waited for the workers to join: strategy bench-warmup)
        signal_rows = await db.fetch("SELECT signal_id, received_at FROM signals WHERE strategy = 'bench'")
        verdict_rows = await db.fetch(
            """SELECT v.signal_id, (v.verdict->>'ts_ingest')::timestamptz, v.decision
                 FROM risk_verdicts v JOIN signals s ON s.signal_id = v.signal_id WHERE s.strategy = 'bench'"""
        )
        order_rows = await db.fetch(
            """SELECT o.signal_id, (o.order_data->>'ts_ingest')::timestamptz
                 FROM orders o JOIN signals s ON s.signal_id = o.signal_id
                WHERE o.status = 'filled' AND o.intent = 'open' AND s.strategy = 'bench'"""
        )
    received = {row[0]: row[1] for row in signal_rows}
    approved = {row[0] for row in verdict_rows if row[2] == "APPROVED"}
    opened = await _position_opened_times(pipeline)
    verdict_times = {row[0]: row[1] for row in verdict_rows}
    order_times = {row[0]: row[1] for row in order_rows}
    # Everything from envelope timestamps (ts_ingest: when each stage emitted its event). A signal still
    # unfinished at the end counts as slower than every finished one, so the tail is not flattered.
    verdicts = _latencies(received, verdict_times, set(received))
    orders = _latencies(received, order_times, approved)
    positions = _latencies(received, opened, approved)
    order_figures = _percentiles(orders)
    return {
        "value": order_figures.get("p99"),
        "unit": "ms (p99 signal->order)",
        "signal_to_order_ms": order_figures,
        "signal_to_position_opened_ms": _percentiles(positions),
        "signal_to_verdict_ms": _percentiles(verdicts),
        "offered_signals_per_s": rate,
        "max_open_positions": LATENCY_MAX_OPEN,
        "seconds": seconds,
        "signals": sent,
        "signals_seen": len(received),
        "approved": len(approved),
        "orders": len(order_times.keys() & approved),
        "unfinished": {
            "verdicts": len(received.keys() - verdict_times.keys()),
            "orders": len(approved - order_times.keys()),
            "positions": len(approved - opened.keys()),
        },
        "price_interval_ms": round(price_interval * 1000),
        "symbols": len(symbols),
        "note": f"an order waits for the next market price (a price per symbol every {price_interval * 1000:.0f} ms "
        "here); unfinished signals count as the slowest",
        "run_id": pipeline.run_id,
    }


def _latencies(start: dict[str, datetime], end: dict[str, datetime], population: set[str]) -> list[float]:
    return [
        (end[key] - start[key]).total_seconds() if key in end else float("inf") for key in population if key in start
    ]


async def _position_opened_times(pipeline: BenchPipeline) -> dict[str, datetime]:
    """signal id -> ts_ingest of its position's `opened` event, read back from the positions topic."""
    from phoenix95.connectors.kafka_admin import read_records
    from phoenix95.schemas.messages import PositionEvent

    codec = Codec.for_settings(pipeline.settings)
    found: dict[str, datetime] = {}
    bootstrap = pipeline.settings.kafka.bootstrap_servers
    async for record in read_records(bootstrap, [pipeline.topics.position_ticks]):
        event = codec.decode(record.value, PositionEvent)
        if event.kind == "opened":
            found.setdefault(event.signal_id, event.ts_ingest)
    return found


def _prices(
    prices: dict[str, Decimal], ticks: dict[str, Decimal], rng: random.Random, namespace: str
) -> list[MarketPrice]:
    from phoenix95.connectors.market_data import price_event

    events = []
    now = datetime.now(UTC)
    for symbol in prices:
        move = Decimal(str(round(rng.gauss(0, 0.0002), 6)))
        price = ((prices[symbol] * (1 + move)) / ticks[symbol]).to_integral_value() * ticks[symbol]
        prices[symbol] = price
        events.append(price_event(symbol=symbol, time=now, price=price, source="bench", namespace=namespace))
    return events
