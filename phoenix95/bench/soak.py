"""`p95 bench --soak DURATION` (`make soak`): the embedded stack and the four workers at live-like rates.

Ten symbols with a GBM price each per second, one signal a minute (confident, so positions open; the
book holds up to 50), on the wall clock, all multiplied by `--soak-speed` (10: ten prices a second per
symbol and a signal every 6 s), and a 1-minute kline per symbol (open, high, low and close of the
minute's prices, `interval` "1m", as `p95 feed binance` publishes them) at the end of each minute. Every `interval` seconds (60 / speed) it samples, per process (broker,
each worker, PostgreSQL, Redis, the time-series store, when the stack runs them here): CPU (cores over
the interval) and resident memory; topic sizes; lag per group; signal->verdict and signal->order
latency of the signals of the interval (p50/p99, from the envelopes' ts_ingest); table row counts and
Redis keys. It writes `soak.csv` and `soak.html` (a chart per column) and reports the first ten
samples against the last ten (or the first and last third when fewer than 30).
"""

from __future__ import annotations

import asyncio
import csv
import html
import os
import random
import statistics
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from phoenix95.settings import Settings

SYMBOLS = {
    "BTCUSDT": (Decimal("60000"), Decimal("0.1")),
    "ETHUSDT": (Decimal("3000"), Decimal("0.01")),
    "SOLUSDT": (Decimal("100"), Decimal("0.01")),
    "XRPUSDT": (Decimal("0.6"), Decimal("0.0001")),
    "BNBUSDT": (Decimal("600"), Decimal("0.01")),
    "ADAUSDT": (Decimal("0.45"), Decimal("0.0001")),
    "DOGEUSDT": (Decimal("0.15"), Decimal("0.00001")),
    "AVAXUSDT": (Decimal("35"), Decimal("0.001")),
    "LINKUSDT": (Decimal("15"), Decimal("0.001")),
    "DOTUSDT": (Decimal("7"), Decimal("0.001")),
}
SOAK_ENV = {
    "P95_RISK__CLOCK": "wall",
    "P95_RISK__MAX_OPEN_POSITIONS": "50",
    "P95_RISK__MAX_POSITION_FRACTION": "0.002",
    "P95_RISK__MAX_ORDERS_PER_MINUTE": "1000000",
    "P95_RISK__DUPLICATE_WINDOW_S": "0",
    "P95_RISK__MAX_EXPOSURE_PER_SYMBOL": "1000000000",
    "P95_RISK__MAX_HOLD_HOURS": "24",
    "P95_RISK__STOP_LOSS_PCT": "0.02",
    "P95_RISK__TAKE_PROFIT_PCT": "0.02",
    "P95_RISK__MAX_PIPELINE_LAG_S": "600",
}
TABLES = ("signals", "risk_verdicts", "orders", "positions", "trades", "dead_letters", "stage_outbox")


def parse_duration(text: str) -> float:
    text = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600}
    if text and text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def run(base: Settings, *, duration_s: float, speed: float, out_dir: Path) -> dict[str, Any]:
    from phoenix95.bench.pipeline import BenchPipeline

    out_dir.mkdir(parents=True, exist_ok=True)
    with BenchPipeline(base, SOAK_ENV) as pipeline:
        # BenchPipeline's own trading limits are for throughput; the soak's win
        os.environ.update(SOAK_ENV)
        return asyncio.run(_soak(pipeline, duration_s, speed, out_dir, base.home))


def _process_table(pipeline: Any, stack_home: Path) -> dict[str, int]:
    from phoenix95.stack.manager import Stack

    pids = {f"worker_{stage}": pipeline.workers.pid(stage) for stage in pipeline.workers.stages}
    names = {"kafka": "broker", "postgres": "postgres", "redis": "redis", "timeseries": "timeseries"}
    for name, endpoint in Stack(stack_home).load().items():
        if endpoint.pid:
            pids[names[name]] = endpoint.pid
    return pids


async def _soak(pipeline: Any, duration_s: float, speed: float, out_dir: Path, stack_home: Path) -> dict[str, Any]:
    import psutil

    from phoenix95.bench.pipeline import _signal
    from phoenix95.connectors.kafka_admin import message_counts
    from phoenix95.connectors.market_data import price_event
    from phoenix95.monitoring.monitor import pipeline_targets
    from phoenix95.monitoring.offsets import OffsetReader
    from phoenix95.schemas.codec import Codec
    from phoenix95.storage.postgres import Database
    from phoenix95.streams.producer import EventProducer

    settings = pipeline.settings
    bootstrap = settings.kafka.bootstrap_servers
    producer = EventProducer(bootstrap, pipeline.topics, Codec.for_settings(settings))
    await producer.start()
    reader = OffsetReader(bootstrap)
    await reader.start()
    import redis.asyncio as aioredis

    redis_client = aioredis.Redis.from_url(settings.redis_url())
    pids = _process_table(pipeline, stack_home)
    processes = {name: psutil.Process(pid) for name, pid in pids.items() if psutil.pid_exists(pid)}
    rng = random.Random(21)
    prices = {s: first for s, (first, _) in SYMBOLS.items()}
    interval = 60.0 / speed
    price_every = 1.0 / speed
    signal_every = 60.0 / speed
    kline_every = 60.0 / speed
    #: per symbol: open, high, low of the minute so far (the close is the last price)
    minute: dict[str, tuple[Decimal, Decimal, Decimal]] = {}
    rows: list[dict[str, Any]] = []
    cpu_last = {n: sum(p.cpu_times()[:2]) for n, p in processes.items()}
    started = time.monotonic()
    next_price = next_signal = started
    next_kline = started + kline_every
    next_sample = started + interval
    sample_from = datetime.now(UTC)
    topics = [
        pipeline.topics.name(t) for t in ("p95.signals", "p95.market.prices", "p95.positions.ticks", "p95.orders")
    ]
    try:
        async with Database(settings.postgres_url(), schema=settings.postgres.db_schema) as db:
            while time.monotonic() - started < duration_s:
                now = time.monotonic()
                if now >= next_price:
                    at = datetime.now(UTC)
                    batch = []
                    for symbol, (_, tick) in SYMBOLS.items():
                        move = Decimal(str(round(rng.gauss(0, 0.0005), 6)))
                        prices[symbol] = price = max(
                            tick, ((prices[symbol] * (1 + move)) / tick).to_integral_value() * tick
                        )
                        first, high, low = minute.get(symbol, (price, price, price))
                        minute[symbol] = (first, max(high, price), min(low, price))
                        batch.append(
                            price_event(
                                symbol=symbol,
                                time=at,
                                price=prices[symbol],
                                source="soak",
                                namespace=settings.namespace,
                            )
                        )
                    await producer.publish(batch)
                    next_price += price_every
                if now >= next_kline and minute:
                    at = datetime.now(UTC)
                    klines = [
                        price_event(
                            symbol=symbol,
                            time=at,
                            price=prices[symbol],
                            open_=first,
                            high=high,
                            low=low,
                            volume=Decimal("0"),
                            interval="1m",
                            source="soak-kline",
                            namespace=settings.namespace,
                        )
                        for symbol, (first, high, low) in minute.items()
                    ]
                    minute.clear()
                    await producer.publish(klines)
                    next_kline += kline_every
                if now >= next_signal:
                    symbol = rng.choice(list(SYMBOLS))
                    signal = _signal(symbol, prices[symbol], datetime.now(UTC), rng, "soak").model_copy(
                        update={"confidence": Decimal("0.95")}
                    )
                    await producer.publish([signal])
                    next_signal += signal_every
                if now >= next_sample:
                    elapsed = now - (next_sample - interval)
                    row: dict[str, Any] = {
                        "t_s": round(now - started, 1),
                        "at": datetime.now(UTC).isoformat(timespec="seconds"),
                    }
                    for name, process in processes.items():
                        try:
                            cpu = sum(process.cpu_times()[:2])
                            row[f"{name}_cpu"] = round((cpu - cpu_last[name]) / elapsed, 3)
                            row[f"{name}_rss_mib"] = round(process.memory_info().rss / 2**20, 1)
                            cpu_last[name] = cpu
                        except psutil.Error:
                            row[f"{name}_cpu"] = row[f"{name}_rss_mib"] = None
                    counts_by_topic = await asyncio.wait_for(message_counts(bootstrap, topics), 60)
                    for topic, count in counts_by_topic.items():
                        row[f"msgs_{pipeline.topics.base(topic).replace('p95.', '')}"] = count
                    snapshot = await asyncio.wait_for(
                        reader.read({t.group: list(t.topics) for t in pipeline_targets(settings.namespace)}), 60
                    )
                    for group, offsets in snapshot.items():
                        row[f"lag_{group.rsplit('-', 1)[-1]}"] = sum(o.lag for o in offsets)
                    latencies = await _latencies(db, sample_from)
                    verdict = sorted(v for v, _ in latencies if v is not None)
                    order = sorted(o for _, o in latencies if o is not None)
                    row["verdict_p50_ms"] = _pct(verdict, 0.5)
                    row["verdict_p99_ms"] = _pct(verdict, 0.99)
                    row["order_p50_ms"] = _pct(order, 0.5)
                    row["order_p99_ms"] = _pct(order, 0.99)
                    counts = (await db.fetch("SELECT " + ", ".join(f"(SELECT COUNT(*) FROM {t})" for t in TABLES)))[0]
                    row.update({f"rows_{t}": c for t, c in zip(TABLES, counts, strict=True)})
                    row["open_positions"] = (await db.fetch("SELECT COUNT(*) FROM positions WHERE status = 'open'"))[0][
                        0
                    ]
                    row["redis_keys"] = await _redis_keys(redis_client, settings.redis.prefix)
                    rows.append(row)
                    _write(rows, out_dir)
                    sample_from = datetime.now(UTC)
                    next_sample += interval
                pipeline.workers.restart_dead()
                await asyncio.sleep(max(0.0, min(next_price, next_signal, next_kline, next_sample) - time.monotonic()))
    finally:
        await producer.stop()
        await reader.stop()
        await redis_client.aclose()
    return summary(rows, out_dir, duration_s=duration_s, speed=speed, run_id=pipeline.run_id)


async def _latencies(db: Any, since: datetime) -> list[tuple[float | None, float | None]]:
    """Signal->verdict of the verdicts, and signal->order of the opening orders, emitted since `since`
    (an order can come a sample after its signal: it waits for the next price)."""
    verdicts = await db.fetch(
        """SELECT EXTRACT(EPOCH FROM ((v.verdict->>'ts_ingest')::timestamptz - s.received_at))::float8
             FROM signals s JOIN risk_verdicts v ON v.signal_id = s.signal_id
            WHERE (v.verdict->>'ts_ingest')::timestamptz >= %s AND s.strategy = 'soak'""",
        (since,),
    )
    orders = await db.fetch(
        """SELECT EXTRACT(EPOCH FROM ((o.order_data->>'ts_ingest')::timestamptz - s.received_at))::float8
             FROM signals s JOIN orders o ON o.signal_id = s.signal_id AND o.intent = 'open'
            WHERE (o.order_data->>'ts_ingest')::timestamptz >= %s AND s.strategy = 'soak'""",
        (since,),
    )
    return [(r[0], None) for r in verdicts] + [(None, r[0]) for r in orders]


async def _redis_keys(client: Any, prefix: str) -> int:
    count = 0
    async for _ in client.scan_iter(match=f"{prefix}*", count=1000):
        count += 1
    return count


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 1)


def _write(rows: list[dict[str, Any]], out_dir: Path) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(out_dir / "soak.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    charts = []
    for column in columns[2:]:
        points = [(row["t_s"], row.get(column)) for row in rows if isinstance(row.get(column), int | float)]
        if not points:
            continue
        xs, ys = [p[0] for p in points], [float(p[1] or 0) for p in points]
        lo, hi = min(ys), max(ys)
        span_x, span_y = (max(xs) - min(xs)) or 1.0, (hi - lo) or 1.0
        path = " ".join(
            f"{10 + (x - min(xs)) / span_x * 380:.1f},{110 - (y - lo) / span_y * 100:.1f}"
            for x, y in zip(xs, ys, strict=True)
        )
        charts.append(
            f"<figure><figcaption>{html.escape(column)}: {lo:g} – {hi:g}</figcaption>"
            f'<svg width="400" height="120"><polyline fill="none" stroke="#36c" stroke-width="1.5" points="{path}"/></svg></figure>'
        )
    (out_dir / "soak.html").write_text(
        "<!doctype html><meta charset=utf-8><title>p95 soak</title><style>figure{display:inline-block;margin:6px;"
        "font:12px sans-serif}svg{border:1px solid #ddd}</style><h1>p95 soak</h1>" + "".join(charts)
    )


def summary(rows: list[dict[str, Any]], out_dir: Path, **meta: Any) -> dict[str, Any]:
    window = 10 if len(rows) >= 30 else max(1, len(rows) // 3)
    first, last = rows[:window], rows[-window:]
    compare: dict[str, Any] = {}
    for column in list(dict.fromkeys(k for row in rows for k in row))[2:]:
        a = [r[column] for r in first if isinstance(r.get(column), int | float)]
        b = [r[column] for r in last if isinstance(r.get(column), int | float)]
        if a and b:
            fa, fb = statistics.fmean(a), statistics.fmean(b)
            compare[column] = {
                "first": round(fa, 3),
                "last": round(fb, 3),
                "change": round((fb - fa) / fa, 3) if fa else None,
            }
    return {
        "value": len(rows),
        "unit": "samples",
        "samples": len(rows),
        "window_samples": window,
        "first_vs_last": compare,
        "csv": str(out_dir / "soak.csv"),
        "html": str(out_dir / "soak.html"),
        **meta,
    }
