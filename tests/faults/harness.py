"""Fault injection: the real pipeline as separate worker processes, killed with SIGKILL (or its broker
or database restarted) at random moments while a known set of signals flows; then counted."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from phoenix95.connectors.market_data import GbmFeed, bundled_candle_events, tick_event
from phoenix95.schemas.codec import Codec
from phoenix95.schemas.convert import tick_of
from phoenix95.schemas.messages import Analysis, Order
from phoenix95.streams.stages import STAGES
from tests import factories
from tests.pipeline import Pipeline

#: Limits opened up so that most signals trade: a crash test wants many orders and positions.
TRADING_ENV = {
    "P95_RISK__CLOCK": "event",
    "P95_RISK__MAX_OPEN_POSITIONS": "1000000",
    "P95_RISK__MAX_POSITION_FRACTION": "0.0005",
    "P95_RISK__MAX_ORDERS_PER_MINUTE": "1000000",
    "P95_RISK__DUPLICATE_WINDOW_S": "0",
    "P95_RISK__MAX_EXPOSURE_PER_SYMBOL": "100000000",
}
SYMBOLS = {"XRPUSDT": None, "BTCUSDT": Decimal("60000"), "ETHUSDT": Decimal("3000")}


@dataclass
class Workload:
    signals: list[Any]
    timeline: list[Any]
    by_symbol: dict[str, list[str]]


def workload(namespace: str, count: int) -> Workload:
    """`count` signals spread over the bundled XRPUSDT candles and simulated BTC/ETH prices, with a
    sequence number per symbol in their ids."""
    xrp = bundled_candle_events("XRPUSDT", "5m", namespace=namespace)
    start = xrp[0].ts_event - timedelta(minutes=5)
    prices = list(xrp)
    for symbol, first in SYMBOLS.items():
        if first is not None:
            feed = GbmFeed(
                symbol, first, start, tick_size=Decimal("0.1") if symbol == "BTCUSDT" else Decimal("0.01"), seed=7
            )
            prices.extend(
                tick_event(t, source="simulated", interval="5m", namespace=namespace) for t in feed.ticks(len(xrp))
            )
    prices.sort(key=lambda p: (p.ts_event, p.symbol))
    span = prices[-1].ts_event - prices[0].ts_event
    rng = random.Random(11)
    last_price: dict[str, Decimal] = {}
    signals = []
    by_symbol: dict[str, list[str]] = {s: [] for s in SYMBOLS}
    index = 0
    times = sorted(prices[0].ts_event + span * (i + 0.5) / count for i in range(count))
    for when in times:
        while index < len(prices) and prices[index].ts_event <= when:
            last_price[prices[index].symbol] = prices[index].price
            index += 1
        symbol = rng.choice(sorted(SYMBOLS))
        sequence = len(by_symbol[symbol])
        signal_id = f"{namespace}-{symbol}-{sequence:06d}"
        by_symbol[symbol].append(signal_id)
        signals.append(
            factories.signal(
                symbol=symbol,
                price=last_price.get(symbol, prices[0].price),
                at=when,
                signal_id=signal_id,
                action=rng.choice(["buy", "sell"]),
                confidence=rng.choice(["0.85", "0.9", "0.95", "0.3"]),
                strategy=f"seq-{symbol}",
            )
        )
    timeline = sorted([*prices, *signals], key=lambda e: (e.ts_event, 0 if isinstance(e, type(signals[0])) else 1))
    return Workload(signals, timeline, by_symbol)


@dataclass
class Chaos:
    """Kills stage workers with SIGKILL at given moments; restarts any dead worker after a pause."""

    pipeline: Pipeline
    plan: list[tuple[float, str]]
    restart_after: float = 1.0
    killed: list[tuple[float, str, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        started = time.monotonic()
        plan = sorted(self.plan)
        while not self.stop.is_set():
            now = time.monotonic() - started
            while plan and plan[0][0] <= now:
                _, stage = plan.pop(0)
                if self.pipeline.workers.alive(stage):
                    pid = self.pipeline.workers.pid(stage)
                    self.pipeline.workers.kill(stage, signal.SIGKILL)
                    self.killed.append((round(now, 1), stage, pid))
                    time.sleep(self.restart_after)
                    self.pipeline.workers.restart_dead()
            self.pipeline.workers.restart_dead()
            time.sleep(0.2)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="chaos", daemon=True)
        thread.start()
        return thread


def kill_plan(
    duration: float, kills: int, seed: int = 5, targets: Sequence[str] | None = None
) -> list[tuple[float, str]]:
    """At least one kill of every stage, spread over the run. With `targets` (worker names, e.g.
    the instances `risk-1`, `risk-2`, ...): `kills` kills taken from them in their order, cycling."""
    rng = random.Random(seed)
    if targets is not None:
        stages = [targets[index % len(targets)] for index in range(kills)]
    else:
        stages = list(STAGES) + [rng.choice(STAGES) for _ in range(max(0, kills - len(STAGES)))]
    rng.shuffle(stages)
    slots = [duration * (i + 1) / (len(stages) + 1) for i in range(len(stages))]
    return [
        (round(slot + rng.uniform(-duration * 0.05, duration * 0.05), 1), stage)
        for slot, stage in zip(slots, stages, strict=True)
    ]


async def publish_paced(pipeline: Pipeline, timeline: list[Any], *, duration: float, chunk: int = 200) -> None:
    """Publish the timeline over about `duration` seconds (so the kills land mid-stream)."""
    chunks = [timeline[i : i + chunk] for i in range(0, len(timeline), chunk)]
    pause = duration / max(len(chunks), 1)
    for part in chunks:
        started = time.monotonic()
        await pipeline.publish(part)
        await asyncio.sleep(max(0.0, pause - (time.monotonic() - started)))


async def settle(pipeline: Pipeline, count: int, timeout: float) -> None:
    async def done(db) -> bool:
        verdicts = await pipeline.count(db, "SELECT COUNT(DISTINCT signal_id) FROM risk_verdicts")
        approved = await pipeline.count(db, "SELECT COUNT(*) FROM risk_verdicts WHERE decision = 'APPROVED'")
        orders = await pipeline.count(db, "SELECT COUNT(*) FROM orders")
        filled = await pipeline.count(db, "SELECT COUNT(*) FROM orders WHERE status = 'filled' AND intent = 'open'")
        positions = await pipeline.count(db, "SELECT COUNT(*) FROM positions")
        return (
            verdicts >= count
            and orders >= approved
            and positions >= filled
            and await pipeline.caught_up(("analysis", "risk", "execution", "positions"))
        )

    await pipeline.wait_for(done, timeout=timeout, what="every signal in its final state after the faults")


async def count(pipeline: Pipeline, work: Workload) -> dict[str, Any]:
    """What the stores, the topics and the paper exchange's own book say happened."""
    async with pipeline.database() as db:
        analysed = {row[0] for row in await db.fetch("SELECT signal_id FROM signals")}
        verdicts_per_signal = Counter(row[0] for row in await db.fetch("SELECT signal_id FROM risk_verdicts"))
        orders_per_verdict = Counter(row[0] for row in await db.fetch("SELECT verdict_id::text FROM orders"))
        trades_per_order = Counter(row[0] for row in await db.fetch("SELECT order_id::text FROM trades"))
        positions_per_trade = Counter(row[0] for row in await db.fetch("SELECT trade_id::text FROM positions"))
        exchange = Counter(row[0] for row in await db.fetch("SELECT client_order_id FROM paper_exchange_orders"))
        filled_orders = await pipeline.count(db, "SELECT COUNT(*) FROM orders WHERE status = 'filled'")
        approved = await pipeline.count(db, "SELECT COUNT(*) FROM risk_verdicts WHERE decision = 'APPROVED'")
        dead = await pipeline.count(db, "SELECT COUNT(*) FROM dead_letters")
        audited = dict(await db.fetch("SELECT action, COUNT(*) FROM audit_log GROUP BY action"))
    published = {s.signal_id for s in work.signals}
    order_on_topics = await _order_kept(pipeline, work)
    on_topics = await _distinct_effects_on_topics(pipeline)
    return {
        "signals": len(published),
        "signals_missing": len(published - analysed),
        "signals_with_more_than_one_verdict": sum(1 for n in verdicts_per_signal.values() if n > 1),
        "verdicts": sum(verdicts_per_signal.values()),
        "approved": approved,
        "orders": sum(orders_per_verdict.values()),
        "duplicate_orders_per_verdict": sum(n - 1 for n in orders_per_verdict.values() if n > 1),
        "exchange_orders": sum(exchange.values()),
        "duplicate_exchange_orders": sum(n - 1 for n in exchange.values() if n > 1),
        "filled_orders": filled_orders,
        "trades": sum(trades_per_order.values()),
        "duplicate_trades": sum(n - 1 for n in trades_per_order.values() if n > 1),
        "positions": sum(positions_per_trade.values()),
        "duplicate_positions": sum(n - 1 for n in positions_per_trade.values() if n > 1),
        "dead_letters": dead,
        **order_on_topics,
        **on_topics,
        **audit_chain(pipeline),
        "audit_verdict_entries": audited.get("verdict", 0),
        "audit_order_entries": audited.get("order", 0),
        "audit_fill_entries": audited.get("fill", 0),
    }


def audit_chain(pipeline: Pipeline) -> dict[str, Any]:
    """`p95 audit verify --json` on the run's schema, as an operator would run it after the faults."""
    settings = pipeline.settings
    env = {
        **os.environ,
        **pipeline.ns.env,
        "P95_POSTGRES__URL": settings.postgres_url(),
        "P95_POSTGRES__DB_SCHEMA": settings.postgres.db_schema,
    }
    p95 = str(Path(sys.executable).with_name("p95"))
    result = subprocess.run([p95, "audit", "verify", "--json"], env=env, capture_output=True, text=True, timeout=300)
    report = json.loads(result.stdout) if result.stdout.strip() else {}
    return {
        "audit_verify_exit": result.returncode,
        "audit_chain_ok": report.get("ok"),
        "audit_broken_at": report.get("broken_at"),
        "audit_entries": report.get("checked"),
    }


async def _order_kept(pipeline: Pipeline, work: Workload) -> dict[str, Any]:
    """Per symbol, the first appearance of each signal on the analysis and orders topics follows the
    published sequence (re-deliveries may repeat a message, never reorder the first ones)."""
    violations: dict[str, int] = {}
    counts: dict[str, int] = {}
    for topic, model in ((pipeline.topics.analysis, Analysis), (pipeline.topics.orders, Order)):
        first_seen: dict[str, list[str]] = {}
        seen: set[str] = set()
        for message in await _read_topic(pipeline, topic, model):
            if message.signal_id not in seen:
                seen.add(message.signal_id)
                first_seen.setdefault(message.symbol, []).append(message.signal_id)
        broken = 0
        for symbol, ids_ in first_seen.items():
            expected = [sid for sid in work.by_symbol[symbol] if sid in set(ids_)]
            broken += ids_ != expected
        name = topic.rsplit(".", 1)[-1]
        violations[f"symbols_out_of_order_on_{name}"] = broken
        counts[f"distinct_signals_on_{name}"] = len(seen)
    return {**violations, **counts}


async def _read_topic(pipeline: Pipeline, topic: str, model: Any) -> list[Any]:
    from phoenix95.connectors.kafka_admin import read_records

    codec = Codec()
    return [
        codec.decode(record.value, model)
        async for record in read_records(pipeline.settings.kafka.bootstrap_servers, [topic])
    ]


async def _distinct_effects_on_topics(pipeline: Pipeline) -> dict[str, int]:
    """Effects counted on the topics, which have no unique constraints (unlike the tables): a
    re-delivered input may repeat an event, but a second *distinct* verdict for a signal, order for a
    verdict or position for an order would be a duplicate effect."""
    from phoenix95.schemas.messages import PositionEvent, RiskVerdict

    verdicts: dict[str, set[str]] = {}
    for verdict in await _read_topic(pipeline, pipeline.topics.risk_verdicts, RiskVerdict):
        verdicts.setdefault(verdict.signal_id, set()).add(verdict.verdict_id)
    orders: dict[str, set[str]] = {}
    for order in await _read_topic(pipeline, pipeline.topics.orders, Order):
        orders.setdefault(order.verdict_id, set()).add(order.order_id)
    positions: dict[str, set[str]] = {}
    for event in await _read_topic(pipeline, pipeline.topics.position_ticks, PositionEvent):
        if event.kind == "opened":
            positions.setdefault(event.order_id, set()).add(event.position_id)
    return {
        "topic_signals_with_distinct_verdicts": sum(1 for ids_ in verdicts.values() if len(ids_) > 1),
        "topic_verdicts_with_distinct_orders": sum(1 for ids_ in orders.values() if len(ids_) > 1),
        "topic_orders_with_distinct_positions": sum(1 for ids_ in positions.values() if len(ids_) > 1),
        "topic_orders": sum(len(ids_) for ids_ in orders.values()),
        "topic_positions_opened": sum(len(ids_) for ids_ in positions.values()),
    }


def assert_nothing_lost_or_doubled(counts: dict[str, Any]) -> None:
    assert counts["signals_missing"] == 0, counts
    assert counts["signals_with_more_than_one_verdict"] == 0, counts
    assert counts["verdicts"] == counts["signals"], counts
    assert counts["orders"] == counts["approved"], counts
    assert counts["duplicate_orders_per_verdict"] == 0, counts
    assert counts["duplicate_exchange_orders"] == 0, counts
    assert counts["exchange_orders"] <= counts["orders"], counts
    assert counts["duplicate_trades"] == 0 and counts["duplicate_positions"] == 0, counts
    assert counts["trades"] == counts["positions"], counts
    assert counts["dead_letters"] == 0, counts
    assert counts["symbols_out_of_order_on_analysis"] == 0, counts
    assert counts["symbols_out_of_order_on_orders"] == 0, counts
    # the same, counted on the topics (no unique constraint there to hide a second distinct effect)
    assert counts["topic_signals_with_distinct_verdicts"] == 0, counts
    assert counts["topic_verdicts_with_distinct_orders"] == 0, counts
    assert counts["topic_orders_with_distinct_positions"] == 0, counts
    assert counts["topic_orders"] == counts["orders"] and counts["topic_positions_opened"] == counts["positions"], (
        counts
    )
    # the audit chain is unbroken after the kills, with one entry per verdict, order and fill
    assert (counts["audit_verify_exit"], counts["audit_chain_ok"], counts["audit_broken_at"]) == (0, True, None), counts
    assert counts["audit_verdict_entries"] == counts["verdicts"], counts
    assert counts["audit_order_entries"] == counts["orders"], counts
    assert counts["audit_fill_entries"] == counts["filled_orders"], counts


def run_scenario(
    pipeline: Pipeline, work: Workload, *, duration: float, faults: Callable[[], Any], timeout: float
) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        await publish_paced(pipeline, work.timeline, duration=duration)
        await settle(pipeline, len(work.signals), timeout)
        return await count(pipeline, work)

    handle = faults()
    try:
        return asyncio.run(go())
    finally:
        stop = getattr(handle, "stop", None)
        if isinstance(stop, threading.Event):
            stop.set()


__all__ = ["TRADING_ENV", "Chaos", "assert_nothing_lost_or_doubled", "kill_plan", "run_scenario", "tick_of", "workload"]
