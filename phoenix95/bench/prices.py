"""`price_throughput`: the pipeline under a price stream (#23 item 3).

Ten symbols, a book of open positions (200 by default, opened by signals first), then prices published
as fast as the broker takes them, with signals at 10/s beside them, on the wall clock:

1. **flood** (`seconds`): what each consumer group of the prices topic (risk, execution, positions)
   consumes a second while the publisher runs flat out, and each group's lag at the start and the end;
2. **paced** (`seconds / 2`, after the backlog drained): prices at 80 % of the slowest group's flood
   rate; the lag of every group at its start and end, and the price -> position-tick latency.

"Flat" lag: a group's lag at the end of a phase exceeds its lag at the start by at most one second of
the phase's offered price rate (so it is not growing by more than the noise of one commit interval).
The figure (`value`) is the paced rate when every group's lag stayed flat during it, else the
slowest group's flood consumption rate (what it sustains; its lag grows at any faster input).

Latency: from a price's event time (set when it was published) to the broker timestamp of the
position tick it caused (taken when the positions stage produced it, after its writes). A position's
mark-to-market tick is published at most once per `risk.mark_interval_s` of event time (1 s), so each
open position gives about one sample a second.

Baseline, same run: a Quix Streams consumer of the same prices topic doing no work (reads every price
published in the flood phase from the start; `"baseline": null` with the reason when Quix is missing).
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from phoenix95.bench.pipeline import BenchPipeline, _percentiles, _signal
from phoenix95.schemas.codec import Codec
from phoenix95.schemas.messages import PositionEvent
from phoenix95.settings import Settings

#: The ten default symbols: a starting price and its tick size (Binance USDⓈ-M PRICE_FILTER).
TEN_SYMBOLS: dict[str, tuple[Decimal, Decimal]] = {
    "BTCUSDT": (Decimal("60000"), Decimal("0.1")),
    "ETHUSDT": (Decimal("3000"), Decimal("0.01")),
    "BNBUSDT": (Decimal("600"), Decimal("0.01")),
    "ADAUSDT": (Decimal("0.5"), Decimal("0.0001")),
    "DOGEUSDT": (Decimal("0.15"), Decimal("0.00001")),
    "XRPUSDT": (Decimal("0.6"), Decimal("0.0001")),
    "SOLUSDT": (Decimal("100"), Decimal("0.01")),
    "AVAXUSDT": (Decimal("30"), Decimal("0.001")),
    "DOTUSDT": (Decimal("7"), Decimal("0.001")),
    "LINKUSDT": (Decimal("15"), Decimal("0.001")),
}
#: The book stays open through the run: wide stop and target, positions live two days.
PRICE_ENV = {
    "P95_RISK__CLOCK": "wall",
    "P95_RISK__MAX_PIPELINE_LAG_S": "3600",
    "P95_RISK__MAX_HOLD_HOURS": "48",
    "P95_RISK__STOP_LOSS_PCT": "0.02",
    "P95_RISK__TAKE_PROFIT_PCT": "0.02",
}
PRICE_STAGES = ("risk", "execution", "positions")


class PriceTape:
    """Prices of the ten symbols, a small random walk on each (a few ticks a step, bounded to
    ±0.5 % of the start so no stop or target is reached), event time strictly increasing."""

    def __init__(self, namespace: str, seed: int = 23):
        rng = random.Random(seed)
        self.namespace = namespace
        self.paths: dict[str, list[Decimal]] = {}
        for symbol, (first, tick) in TEN_SYMBOLS.items():
            level, path = 0, []
            span = int(first * Decimal("0.005") / tick) or 1
            for _ in range(4096):
                level = max(-span, min(span, level + rng.choice((-2, -1, 0, 1, 2))))
                path.append(first + level * tick)
            self.paths[symbol] = path
        self.index = 0
        self.last = datetime.now(UTC)

    def next_batch(self, count: int) -> list[Any]:
        from phoenix95.connectors.market_data import price_event

        now = datetime.now(UTC)
        if now <= self.last:
            now = self.last + timedelta(microseconds=1)
        events = []
        symbols = list(self.paths)
        for i in range(count):
            symbol = symbols[i % len(symbols)]
            at = now + timedelta(microseconds=i // len(symbols))
            path = self.paths[symbol]
            price = path[self.index % len(path)]
            events.append(price_event(symbol=symbol, time=at, price=price, source="bench", namespace=self.namespace))
            if i % len(symbols) == len(symbols) - 1:
                self.index += 1
        self.last = now + timedelta(microseconds=count // len(symbols) + 1)
        return events


def run(base: Settings, *, quick: bool, positions: int = 200) -> dict[str, Any]:
    seconds = float(os.environ.get("P95_BENCH_PRICE_SECONDS") or (8 if quick else 30))
    with BenchPipeline(base, PRICE_ENV) as pipeline:
        result = asyncio.run(_run(pipeline, positions=positions, seconds=seconds))
    from phoenix95.bench import quix_baseline
    from phoenix95.bench.external import optional_baseline

    baseline, missing = optional_baseline(
        quix_baseline.missing(),
        lambda: quix_passthrough(base.kafka.bootstrap_servers, result.pop("_topic"), result["flood"]["published"]),
    )
    result.pop("_topic", None)
    result["baseline"] = {"quix_streams_passthrough": baseline} if baseline is not None else None
    if missing:
        result["baseline_missing"] = {"quix_streams": missing}
    quix_rate = (baseline or {}).get("prices_per_s")
    result["ratio"] = round(result["value"] / quix_rate, 3) if quix_rate and result.get("value") else None
    return result


async def _run(pipeline: BenchPipeline, *, positions: int, seconds: float) -> dict[str, Any]:
    from phoenix95.monitoring.monitor import pipeline_targets
    from phoenix95.monitoring.offsets import OffsetReader
    from phoenix95.streams.producer import EventProducer

    settings = pipeline.settings
    bootstrap = settings.kafka.bootstrap_servers
    codec = Codec.for_settings(settings)
    producer = EventProducer(bootstrap, pipeline.topics, codec, linger_ms=5)
    await producer.start()
    tape = PriceTape(settings.namespace)
    rng = random.Random(11)
    prices_topic = _prices_topic(pipeline)
    targets = {t.stage: t for t in pipeline_targets(settings.namespace)}
    groups = {targets[s].group: [prices_topic] for s in PRICE_STAGES}
    reader = OffsetReader(bootstrap)
    await reader.start()
    try:
        setup_started = time.perf_counter()
        opened = await _open_book(pipeline, producer, tape, rng, positions)
        setup_s = time.perf_counter() - setup_started
        # flood, with each price stage's CPU (and py-spy on it when P95_BENCH_PRICE_PROFILE_DIR is set)
        cpu = StageCpu(pipeline, profile_dir=os.environ.get("P95_BENCH_PRICE_PROFILE_DIR"))
        flood = await _phase(producer, tape, rng, reader, groups, seconds=seconds, rate=None)
        flood["cpu"] = cpu.finish(flood["consumed"])
        # let the backlog drain (bounded), then the paced phase at 80 % of the slowest group
        drained = await _drain(producer, tape, reader, groups, timeout=max(120.0, seconds * 10))
        slowest = min(flood["consumed_per_s"].values()) if flood["consumed_per_s"] else 0.0
        paced_rate = max(100.0, 0.8 * slowest)
        paced_from = datetime.now(UTC)
        paced = await _phase(producer, tape, rng, reader, groups, seconds=max(4.0, seconds / 2), rate=paced_rate)
        paced_until = datetime.now(UTC)
        await asyncio.sleep(2.0)
    finally:
        await producer.stop()
        await reader.stop()
    latency = await _tick_latency(pipeline, paced_from, paced_until)
    sustained = paced["achieved_per_s"] if paced["lag_flat"] else slowest
    return {
        "value": round(sustained, 1),
        "unit": "prices/s sustained (every price group's lag flat)",
        "open_positions": opened,
        "symbols": len(TEN_SYMBOLS),
        "setup_s": round(setup_s, 1),
        "flood": flood,
        "drained": drained,
        "paced": paced,
        "price_to_tick_ms": latency,
        "flat": "a group's lag at the end of a phase exceeds its lag at the start by at most one second of "
        "the phase's offered price rate",
        "note": "value: the paced rate if every group's lag stayed flat in it, else the slowest group's "
        "consumption rate in the flood phase; latency: price event time -> broker timestamp of the "
        "position tick (ticks are published once a second of event time per position)",
        "run_id": pipeline.run_id,
        "_topic": prices_topic,
    }


def _prices_topic(pipeline: BenchPipeline) -> str:
    from phoenix95.schemas import topics

    return pipeline.topics.name(topics.MARKET_PRICES)


async def _open_book(pipeline: BenchPipeline, producer: Any, tape: PriceTape, rng: random.Random, count: int) -> int:
    """Signals (confident, all ten symbols) until `count` positions are open, prices beside them: a
    round of signals for what is missing, the next once every signal of the last was decided."""
    await pipeline.warm_up()  # every worker has joined its group (one signal through the four stages)
    sent = 0
    open_now = 0
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        await producer.publish(tape.next_batch(len(TEN_SYMBOLS)))
        verdicts, _approved, _orders, filled, positions = await pipeline.counts()
        open_now = await _open_positions(pipeline)
        if open_now >= count:
            return open_now
        if verdicts - 1 >= sent and positions >= filled:  # the last round is decided and booked
            batch = []
            for i in range(count - open_now):
                symbol = list(TEN_SYMBOLS)[(sent + i) % len(TEN_SYMBOLS)]
                price = tape.paths[symbol][tape.index % len(tape.paths[symbol])]
                signal = _signal(symbol, price, datetime.now(UTC), rng, "bench-book")
                batch.append(signal.model_copy(update={"confidence": Decimal("0.95")}))
            await producer.publish(batch)
            sent += len(batch)
        await asyncio.sleep(0.2)
    raise TimeoutError(f"only {open_now} of {count} positions opened within 300 s")


async def _open_positions(pipeline: BenchPipeline) -> int:
    from phoenix95.storage.postgres import Database

    async with Database(pipeline.settings.postgres_url(), schema=pipeline.settings.postgres.db_schema) as db:
        rows = await db.fetch("SELECT COUNT(*) FROM positions WHERE status = 'open'")
    return int(rows[0][0])


async def _committed_and_lag(reader: Any, groups: dict[str, list[str]]) -> tuple[dict[str, int], dict[str, int]]:
    found = await reader.read(groups)
    position = {group: sum(r.position for r in rows) for group, rows in found.items()}
    lag = {group: sum(r.lag for r in rows) for group, rows in found.items()}
    return position, lag


async def _phase(
    producer: Any,
    tape: PriceTape,
    rng: random.Random,
    reader: Any,
    groups: dict[str, list[str]],
    *,
    seconds: float,
    rate: float | None,
) -> dict[str, Any]:
    """Publish prices for `seconds` (flat out, or at `rate` a second) with signals at 10/s beside them."""
    position_before, lag_before = await _committed_and_lag(reader, groups)
    published = signals = 0
    chunk = 500 if rate is None else max(10, int(rate / 50))
    started = time.perf_counter()
    next_signal = started
    while (now := time.perf_counter()) - started < seconds:
        if rate is not None:
            due = int((now - started) * rate) - published
            if due <= 0:
                await asyncio.sleep(0.005)
                continue
            count = min(due, chunk)
        else:
            count = chunk
        await producer.publish(tape.next_batch(count))
        published += count
        if now >= next_signal:
            symbol = rng.choice(list(TEN_SYMBOLS))
            price = tape.paths[symbol][tape.index % len(tape.paths[symbol])]
            await producer.publish([_signal(symbol, price, datetime.now(UTC), rng, "bench-beside")])
            signals += 1
            next_signal += 0.1
    elapsed = time.perf_counter() - started
    position_after, lag_after = await _committed_and_lag(reader, groups)
    tolerance = (published / elapsed) if elapsed else 0.0
    names = _stage_names(groups)
    return {
        "consumed": {names[g]: position_after[g] - position_before[g] for g in position_after},
        "seconds": round(elapsed, 1),
        "published": published,
        "achieved_per_s": round(published / elapsed, 1),
        "offered_per_s": round(rate, 1) if rate is not None else "flat out",
        "signals": signals,
        "consumed_per_s": {
            names[g]: round((position_after[g] - position_before[g]) / elapsed, 1) for g in position_after
        },
        "lag_start": {names[g]: lag_before.get(g) for g in lag_after},
        "lag_end": {names[g]: lag_after[g] for g in lag_after},
        "lag_flat": all(lag_after[g] - lag_before.get(g, 0) <= tolerance for g in lag_after),
    }


class StageCpu:
    """CPU seconds of each price stage's worker from now to `finish`, per price it consumed; with
    `profile_dir`, py-spy records each worker meanwhile (folded stacks, flame graph, areas)."""

    def __init__(self, pipeline: BenchPipeline, *, profile_dir: str | None = None):
        import psutil

        self.processes = {stage: psutil.Process(pipeline.workers.pid(stage)) for stage in PRICE_STAGES}
        self.spies: dict[str, Any] = {}
        self.out = None
        if profile_dir:
            from pathlib import Path

            from phoenix95.bench.profile import py_spy, record

            spy = py_spy()
            self.out = Path(profile_dir)
            self.out.mkdir(parents=True, exist_ok=True)
            if spy is not None:
                self.spies = {
                    stage: record(spy, process.pid, self.out / f"{stage}.folded")
                    for stage, process in self.processes.items()
                }
                time.sleep(1.0)  # attached
        self.before = {stage: sum(p.cpu_times()[:2]) for stage, p in self.processes.items()}

    def finish(self, consumed: dict[str, int]) -> dict[str, Any]:
        import signal as signals

        used = {stage: sum(p.cpu_times()[:2]) - self.before[stage] for stage, p in self.processes.items()}
        figures: dict[str, Any] = {
            stage: {
                "cpu_s": round(used[stage], 2),
                "consumed": consumed.get(stage, 0),
                "cpu_us_per_price": round(used[stage] / consumed[stage] * 1e6, 1) if consumed.get(stage) else None,
            }
            for stage in self.processes
        }
        for spy in self.spies.values():
            spy.send_signal(signals.SIGINT)
        for stage, spy in self.spies.items():
            try:
                spy.wait(timeout=60)
            except subprocess.TimeoutExpired:
                spy.kill()
            if self.out is not None:
                from phoenix95.bench.profile import areas, flame_svg, read_folded, top_frames

                stacks = read_folded(self.out / f"{stage}.folded")
                (self.out / f"{stage}.svg").write_text(flame_svg(stacks, f"p95 {stage} worker, price_throughput"))
                figures[stage].update(areas=areas(stacks), top_frames=top_frames(stacks, 8))
        return figures


def _stage_names(groups: dict[str, list[str]]) -> dict[str, str]:
    return {group: next((s for s in PRICE_STAGES if group.endswith(s)), group) for group in groups}


async def _drain(
    producer: Any, tape: PriceTape, reader: Any, groups: dict[str, list[str]], *, timeout: float
) -> dict[str, Any]:
    """Wait until every group's lag is small again (prices continue at 10 per symbol a second)."""
    started = time.perf_counter()
    lag: dict[str, int] = {}
    while time.perf_counter() - started < timeout:
        _, lag = await _committed_and_lag(reader, groups)
        if all(value < 500 for value in lag.values()):
            break
        await producer.publish(tape.next_batch(len(TEN_SYMBOLS)))
        await asyncio.sleep(1.0)
    names = _stage_names(groups)
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "lag": {names[g]: v for g, v in lag.items()},
        "drained": all(value < 500 for value in lag.values()),
    }


async def _tick_latency(pipeline: BenchPipeline, since: datetime, until: datetime) -> dict[str, Any]:
    """Price event time -> broker timestamp of the tick, for ticks of prices in [since, until)."""
    from phoenix95.connectors.kafka_admin import read_records

    codec = Codec.for_settings(pipeline.settings)
    latencies: list[float] = []
    async for record in read_records(pipeline.settings.kafka.bootstrap_servers, [pipeline.topics.position_ticks]):
        event = codec.decode(record.value, PositionEvent)
        if event.kind != "tick" or not (since <= event.ts_event < until):
            continue
        latencies.append(record.timestamp / 1000 - event.ts_event.timestamp())
    return _percentiles(latencies)


def quix_passthrough(bootstrap: str, topic: str, messages: int, timeout: float = 300.0) -> dict[str, Any]:
    """A Quix Streams consumer of `topic` from its start, doing no work: messages a second until it
    has read `messages` (in a process of its own; the time from its first message to the last)."""
    result = subprocess.run(
        [sys.executable, "-m", "phoenix95.bench.quix_baseline", "--consume", bootstrap, topic, str(messages)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    for line in reversed(result.stdout.strip().splitlines()):
        if line.startswith("{"):
            import json

            return dict(json.loads(line))
    raise RuntimeError(f"the Quix Streams consumer printed no result: {(result.stderr or result.stdout)[-600:]}")
