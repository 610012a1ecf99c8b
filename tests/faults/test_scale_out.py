"""Scale-out under SIGKILL: two instances of every stage as separate processes in each stage's one
consumer group, four partitions on every topic, live prices on ten symbols, instances killed one at a
time while signals flow. Nothing lost, nothing duplicated (PostgreSQL and topics), per-symbol order
kept, and MAX_OPEN_POSITIONS=5 never exceeded at any moment of the position events' own timestamps,
although two risk instances run (the risk input is keyed by book: one instance decides for it).

Reduced size by default (CI); the full run:
P95_SCALE_SIGNALS=10000 P95_SCALE_SECONDS=300 P95_SCALE_KILLS=8 \
    pytest -s --timeout 2400 tests/faults/test_scale_out.py
It prints its counts, the maximum open positions and the rebalances (pytest -s shows them)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import re
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from phoenix95.domain.config import DEFAULT_SYMBOLS, TradingConfig
from phoenix95.schemas.messages import PositionEvent
from phoenix95.streams.producer import EventProducer
from tests import factories
from tests.faults.harness import (
    Chaos,
    Workload,
    _read_topic,
    assert_nothing_lost_or_doubled,
    count,
    kill_plan,
    settle,
)
from tests.pipeline import Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SIGNALS = int(os.environ.get("P95_SCALE_SIGNALS", "400"))
SECONDS = float(os.environ.get("P95_SCALE_SECONDS", "40"))
KILLS = int(os.environ.get("P95_SCALE_KILLS", "4"))
INSTANCES = 2
PARTITIONS = 4
MAX_OPEN = 5
#: Live prices: every symbol every TICK seconds, stamped with the wall clock when published.
TICK = 0.1
FIRST_PRICES = {
    "BTCUSDT": "60000",
    "ETHUSDT": "3000",
    "BNBUSDT": "600",
    "ADAUSDT": "0.5",
    "DOGEUSDT": "0.1",
    "XRPUSDT": "0.5",
    "SOLUSDT": "150",
    "AVAXUSDT": "30",
    "DOTUSDT": "6",
    "LINKUSDT": "15",
}
#: Wall clock (the clock of the race this test is about), tight limits, fast-closing positions.
SCALE_ENV = {
    "P95_RISK__CLOCK": "wall",
    "P95_KAFKA__PARTITIONS": str(PARTITIONS),
    "P95_RISK__MAX_OPEN_POSITIONS": str(MAX_OPEN),
    "P95_RISK__MAX_POSITION_FRACTION": "0.0005",
    "P95_RISK__MAX_ORDERS_PER_MINUTE": "1000000",
    "P95_RISK__DUPLICATE_WINDOW_S": "0",
    "P95_RISK__MAX_EXPOSURE_PER_SYMBOL": "100000000",
    "P95_RISK__STOP_LOSS_PCT": "0.003",
    "P95_RISK__TAKE_PROFIT_PCT": "0.003",
    "P95_EXECUTION__QUIET_FEED_FILL_AFTER_S": "2",
    # the lag guard (SIGNAL_STALE) is not under test: rebalances on a loaded 2-core machine stall
    # the signal path for tens of seconds, and the limits are only exercised by approvals
    "P95_RISK__MAX_PIPELINE_LAG_S": "3600",
}
#: Kills spread over stages and instances: the first four hit each stage once, on alternating instances.
TARGETS = [
    "analysis-1",
    "risk-2",
    "execution-1",
    "positions-2",
    "analysis-2",
    "risk-1",
    "execution-2",
    "positions-1",
]


class LiveFeed:
    """Ten symbols' prices as a random walk, and signals, all stamped with the wall clock as they are
    published (as a live feed and live webhooks are); signal ids carry a per-symbol sequence."""

    def __init__(self, namespace: str, signals: int, seed: int = 13):
        self.namespace = namespace
        self.rng = random.Random(seed)
        self.config = TradingConfig()
        self.prices = {symbol: Decimal(FIRST_PRICES[symbol]) for symbol in DEFAULT_SYMBOLS}
        self.symbols = [self.rng.choice(DEFAULT_SYMBOLS) for _ in range(signals)]
        self.by_symbol: dict[str, list[str]] = {symbol: [] for symbol in DEFAULT_SYMBOLS}
        self.signals: list[Any] = []

    def tick(self, now: datetime) -> list[Any]:
        events = []
        for symbol in DEFAULT_SYMBOLS:
            tick_size = self.config.rules(symbol).tick_size
            moved = self.prices[symbol] * Decimal(str(1 + self.rng.gauss(0, 0.0007)))
            self.prices[symbol] = max(tick_size, moved.quantize(tick_size))
            events.append(factories.price(symbol=symbol, value=self.prices[symbol], at=now, namespace=self.namespace))
        return events

    def signal(self, now: datetime) -> Any:
        symbol = self.symbols[len(self.signals)]
        signal_id = f"{self.namespace}-{symbol}-{len(self.by_symbol[symbol]):06d}"
        self.by_symbol[symbol].append(signal_id)
        made = factories.signal(
            symbol=symbol,
            price=self.prices[symbol],
            at=now,
            signal_id=signal_id,
            action=self.rng.choice(["buy", "sell"]),
            confidence=self.rng.choice(["0.85", "0.9", "0.95"]),
            strategy=f"seq-{symbol}",
        )
        self.signals.append(made)
        return made

    def workload(self) -> Workload:
        return Workload(self.signals, [], self.by_symbol)


async def publish_live(pipeline: Pipeline, feed: LiveFeed, total: int, duration: float) -> None:
    producer = EventProducer(pipeline.settings.kafka.bootstrap_servers, pipeline.topics, pipeline.codec)
    await producer.start()
    try:
        started = time.monotonic()
        steps = max(1, int(duration / TICK))
        for step in range(steps):
            now = datetime.now(UTC)
            due = round(total * (step + 1) / steps) - len(feed.signals)
            events = feed.tick(now) + [feed.signal(now) for _ in range(due)]
            await producer.publish(events)
            await asyncio.sleep(max(0.0, started + (step + 1) * TICK - time.monotonic()))
        # a few more seconds of prices, so the last orders fill at a next price
        for _ in range(int(3 / TICK)):
            await producer.publish(feed.tick(datetime.now(UTC)))
            await asyncio.sleep(TICK)
    finally:
        await producer.stop()


async def open_positions_over_time(pipeline: Pipeline) -> dict[str, Any]:
    """Replays the position events in their own timestamps' order (each position's open and end
    once, however often re-deliveries repeated them; an end before an open at the same instant) and
    returns the highest number open at any moment."""
    opened: dict[str, datetime] = {}
    ended: dict[str, datetime] = {}
    for event in await _read_topic(pipeline, pipeline.topics.position_ticks, PositionEvent):
        if event.kind == "opened":
            opened.setdefault(event.position_id, event.ts_event)
        elif event.kind in ("closed", "liquidated", "expired"):
            ended.setdefault(event.position_id, event.ts_event)
    steps = sorted([(at, 1) for at in opened.values()] + [(at, -1) for at in ended.values()])
    current = highest = 0
    for _, change in steps:
        current += change
        highest = max(highest, current)
    return {
        "positions_opened_on_topic": len(opened),
        "positions_ended_on_topic": len(ended),
        "ended_without_open": len(set(ended) - set(opened)),
        "max_open_positions": highest,
        "open_at_end": current,
    }


ASSIGNED = re.compile(r"^\[(\S+ \S+)\] \[\d+\] \[INFO\] stage (\w+): assigned ", re.MULTILINE)


def wait_for_groups(log_dir: Path, names: list[str], *, quiet: float = 5.0, timeout: float = 180.0) -> float:
    """Until every instance logged an assignment and none changed for `quiet` seconds (the groups
    formed: a Faust worker joins its group in seconds here, each join a rebalance). Returns the wait."""
    started = time.monotonic()
    last_change, seen = started, -1
    while time.monotonic() - started < timeout:
        logs = {name: log_dir / f"worker-{name}.log" for name in names}
        texts = {name: log.read_text(errors="replace") if log.exists() else "" for name, log in logs.items()}
        total = sum(len(ASSIGNED.findall(text)) for text in texts.values())
        if total != seen:
            seen, last_change = total, time.monotonic()
        if all(ASSIGNED.search(text) for text in texts.values()) and time.monotonic() - last_change >= quiet:
            return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(f"the consumer groups did not form within {timeout:.0f}s; logs in {log_dir}")


def rebalances(log_dir: Path, since: datetime) -> dict[str, int]:
    """Per stage, the rebalances after `since` (the groups formed), from the workers' logs: every
    member logs its new assignment after each rebalance, and lines less than 3 s apart are one
    rebalance (a killed instance's partitions moving to the other, then shared again when it is back)."""
    times: dict[str, list[datetime]] = {}
    for log in log_dir.glob("worker-*.log"):
        for stamp, stage in ASSIGNED.findall(log.read_text(errors="replace")):
            at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f")  # the workers' local time, as `since`
            times.setdefault(stage, [])
            if at > since:
                times[stage].append(at)
    rounds: dict[str, int] = {}
    for stage, stamps in sorted(times.items()):
        stamps.sort()
        rounds[stage] = (1 if stamps else 0) + sum(
            1 for a, b in itertools.pairwise(stamps) if (b - a).total_seconds() > 3
        )
    return rounds


def test_two_instances_per_stage_under_sigkill_lose_nothing_duplicate_nothing_and_keep_the_limits(
    namespace, monkeypatch
):
    from phoenix95.settings import get_settings

    for key, value in SCALE_ENV.items():
        monkeypatch.setenv(key, value)
        namespace.env[key] = value
    get_settings.cache_clear()
    pipeline = Pipeline(namespace, instances=INSTANCES)
    assert len(pipeline.workers.names) == 8
    feed = LiveFeed(namespace.name, SIGNALS)
    pipeline.start()
    formed_after = wait_for_groups(namespace.home / "logs", pipeline.workers.names)
    formed_at = datetime.now()  # local time, as the workers' log time stamps
    chaos = Chaos(pipeline, kill_plan(SECONDS, KILLS, targets=TARGETS))

    async def go() -> dict[str, Any]:
        await publish_live(pipeline, feed, SIGNALS, SECONDS)
        await settle(pipeline, SIGNALS, SECONDS * 4 + 180)
        async with pipeline.database() as db:
            reasons = dict(await db.fetch("SELECT r, COUNT(*) FROM risk_verdicts, unnest(reasons) r GROUP BY r"))
        return {
            **await count(pipeline, feed.workload()),
            **await open_positions_over_time(pipeline),
            "rejections_by_reason": reasons,
        }

    chaos.start()
    try:
        counts = asyncio.run(go())
    finally:
        chaos.stop.set()
        pipeline.stop()

    async def partitions() -> dict[str, int]:
        from phoenix95.connectors.kafka_admin import end_offsets

        ends = await end_offsets(pipeline.settings.kafka.bootstrap_servers, list(pipeline.topics.all()))
        per_topic: dict[str, int] = {}
        for tp in ends:
            per_topic[tp.topic] = per_topic.get(tp.topic, 0) + 1
        return per_topic

    topic_partitions = asyncio.run(partitions())
    groups = rebalances(namespace.home / "logs", formed_at)
    report = {
        **counts,
        "groups_formed_after_s": round(formed_after, 1),
        "kills": chaos.killed,
        "rebalances": groups,
        "rebalances_total": sum(groups.values()),
        "topic_partitions": min(topic_partitions.values()),
    }
    print(f"\nscale-out: {json.dumps(report, indent=1, default=str)}")
    assert len(chaos.killed) >= min(KILLS, 4)
    assert {name.rsplit("-", 1)[0] for _, name, _ in chaos.killed} >= {"analysis", "risk", "execution", "positions"}
    assert min(topic_partitions.values()) >= PARTITIONS
    assert_nothing_lost_or_doubled(counts)
    assert counts["positions_opened_on_topic"] == counts["positions"] > MAX_OPEN  # the limit was reached, and churned
    assert counts["ended_without_open"] == 0
    assert counts["max_open_positions"] <= MAX_OPEN, counts
    killed_stages = {name.rsplit("-", 1)[0] for _, name, _ in chaos.killed}
    assert all(groups[stage] > 0 for stage in killed_stages), groups  # each kill moved partitions
