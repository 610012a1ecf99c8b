"""Kafka-mode replay: the events re-published into a namespace of their own (topics, consumer groups,
PostgreSQL schema, Redis prefix, time-series tag) and processed by the real stage workers."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from phoenix95.connectors.market_data import tick_event
from phoenix95.domain.execution import MarketTick
from phoenix95.domain.positions import Position
from phoenix95.replay.digest import close_line, order_line
from phoenix95.replay.engine import event_order
from phoenix95.schemas.codec import Codec
from phoenix95.schemas.envelope import Event
from phoenix95.schemas.messages import Signal
from phoenix95.schemas.topics import Topics
from phoenix95.settings import Settings

CHUNK = 500


@dataclass(frozen=True)
class VerdictRow:
    decision: str
    reasons: tuple[str, ...]


@dataclass
class KafkaRun:
    run_id: str
    lines: list[str]
    closed: list[Position]
    open: list[Position]
    verdicts: list[VerdictRow]
    orders: list[Any]
    elapsed_s: float
    #: Seconds from the first event sent to the last one acknowledged (the pacing, at --speed > 0).
    publish_s: float = 0.0
    #: Seconds from starting the workers until each had joined its group (not in `elapsed_s`).
    startup_s: float = 0.0


def new_run_id() -> str:
    return "r" + uuid.uuid4().hex[:10]


def run_environment(settings: Settings, run_id: str, overrides: dict[str, str]) -> dict[str, str]:
    env = {
        "P95_HOME": str(settings.home),
        "P95_NAMESPACE": run_id,
        "P95_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "P95_POSTGRES__URL": settings.postgres_url(),
        "P95_POSTGRES__DB_SCHEMA": run_id,
        "P95_REDIS__URL": settings.redis_url(),
        "P95_REDIS__PREFIX": f"{run_id}:s4:",
        "P95_RISK__CLOCK": "event",
        "P95_EXECUTION__QUIET_FEED_FILL_AFTER_S": "5",
    }
    if settings.influx.url:
        env["P95_INFLUX__URL"] = settings.influx.url
    env.update(overrides)
    return env


async def run_kafka(
    settings: Settings,
    signals: Sequence[Signal],
    ticks: Sequence[MarketTick],
    *,
    overrides: dict[str, str],
    speed: float = 0.0,
    timeout: float = 600.0,
    on_progress: Callable[[int, int], None] | None = None,
) -> KafkaRun:
    from phoenix95.streams.stages import STAGES
    from phoenix95.streams.supervisor import WorkerSet
    from phoenix95.streams.wiring import prepare

    run_id = new_run_id()
    env = run_environment(settings, run_id, overrides)
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        run_settings = Settings()
        await asyncio.to_thread(prepare, run_settings)
        workers = WorkerSet(STAGES, env=env, log_dir=run_settings.home / "logs" / run_id)
        workers.start()
        try:
            # the clock starts once every worker reads its partitions (startup_s: starting and joining)
            startup_s = await asyncio.to_thread(workers.wait_assigned, min(timeout, 180.0))
            started = time.perf_counter()
            publish_s = await _publish(run_settings, signals, ticks, speed=speed, on_progress=on_progress)
            await _wait(run_settings, len(signals), timeout=timeout, workers=workers)
            elapsed = time.perf_counter() - started
        finally:
            workers.stop()
        lines, closed, open_, verdicts, orders = await _collect(run_settings)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return KafkaRun(run_id, lines, closed, open_, verdicts, orders, elapsed, publish_s, startup_s)


async def _publish(
    settings: Settings,
    signals: Sequence[Signal],
    ticks: Sequence[MarketTick],
    *,
    speed: float,
    on_progress: Callable[[int, int], None] | None,
) -> float:
    """Publish the events in event-time order; at `speed` > 0 each is sent when its event time,
    scaled by 1/speed, has passed since the first (`speed` 1: real time). Returns the seconds
    from the first send to the last acknowledgement."""
    from phoenix95.streams.producer import EventProducer

    topics = Topics(settings.namespace)
    producer = EventProducer(settings.kafka.bootstrap_servers, topics, Codec.for_settings(settings))
    await producer.start()
    try:
        items: list[Signal | MarketTick] = [*signals, *ticks]
        timeline = sorted(items, key=event_order)
        total = len(timeline)
        chunk: list[Any] = []
        first_event: datetime | None = None
        first_wall = time.perf_counter()
        for index, item in enumerate(timeline, start=1):
            message: Event = tick_event(item, namespace=settings.namespace) if isinstance(item, MarketTick) else item
            when = message.ts_event
            if speed > 0:
                # what is due goes out now; this event waits until its own time has come
                first_event = first_event or when
                due = (when - first_event).total_seconds() / speed
                wait = due - (time.perf_counter() - first_wall)
                if wait > 0.005:
                    if chunk:
                        await producer.publish(chunk)
                        chunk = []
                    await asyncio.sleep(wait)
            chunk.append(message)
            if len(chunk) >= CHUNK:
                await producer.publish(chunk)
                chunk = []
                if on_progress is not None:
                    on_progress(index, total)
        if chunk:
            await producer.publish(chunk)
        published_s = time.perf_counter() - first_wall
        if on_progress is not None:
            on_progress(total, total)
    finally:
        await producer.stop()
    return published_s


async def _wait(settings: Settings, signal_count: int, *, timeout: float, workers: Any) -> None:
    """Until every signal is decided, every approved one ordered, every fill a position, and the
    risk, execution and positions groups committed to the end of their inputs. The offsets are read
    by one reader for the whole wait (a consumer made per look took longer than a look)."""
    from phoenix95.monitoring.offsets import OffsetReader
    from phoenix95.storage.postgres import Database
    from phoenix95.streams.stages import spec

    topics = Topics(settings.namespace)
    groups = {
        topics.group(stage): [topics.name(base) for base in spec(stage).inputs]
        for stage in ("risk", "execution", "positions")
    }
    deadline = time.monotonic() + timeout
    async with (
        Database(settings.postgres_url(), schema=settings.postgres.db_schema) as db,
        OffsetReader(settings.kafka.bootstrap_servers) as reader,
    ):
        while time.monotonic() < deadline:
            workers.restart_dead()
            rows = await db.fetch(
                """SELECT (SELECT COUNT(*) FROM risk_verdicts) + (SELECT COUNT(*) FROM dead_letters WHERE stage = 'analysis'),
                          (SELECT COUNT(*) FROM risk_verdicts WHERE decision = 'APPROVED'),
                          (SELECT COUNT(*) FROM orders),
                          (SELECT COUNT(*) FROM orders WHERE status = 'filled' AND intent = 'open'),
                          (SELECT COUNT(*) FROM positions)"""
            )
            decided, approved, orders, filled, positions = rows[0]
            if decided >= signal_count and orders >= approved and positions >= filled:
                offsets = await reader.read(groups)
                if all((row.committed or 0) >= row.end for found in offsets.values() for row in found if row.end > 0):
                    return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"the kafka-mode replay did not finish within {timeout:.0f}s (logs in {settings.home / 'logs'})")


async def _collect(settings: Settings) -> tuple[list[str], list[Position], list[Position], list[VerdictRow], list[Any]]:
    from phoenix95.storage.postgres import Database
    from phoenix95.storage.queries import all_positions
    from phoenix95.streams.wiring import brackets_for, trading_config

    config = trading_config(settings)
    async with Database(settings.postgres_url(), schema=settings.postgres.db_schema) as db:
        orders = await db.fetch(
            """SELECT order_id::text, client_order_id, symbol, side, intent, quantity, status, fill_price, fill_quantity,
                      fee, filled_at FROM orders"""
        )
        positions = await all_positions(db, brackets_for(settings), config.funding_interval)
        verdicts = await db.fetch("SELECT decision, reasons FROM risk_verdicts")
    closed = [p for p in positions if not p.is_open]
    lines = [order_line(*row) for row in orders] + [
        close_line(p.position_id, p.status, p.close_reason, p.exit_price, p.closed_at, p.realized_pnl) for p in closed
    ]
    return (
        lines,
        closed,
        [p for p in positions if p.is_open],
        [VerdictRow(d, tuple(r)) for d, r in verdicts],
        [row for row in orders],
    )


#: DeleteGroups error codes: the group is gone already; its members have not left it yet.
GROUP_ID_NOT_FOUND = 69
NON_EMPTY_GROUP = 68


def run_groups(run_id: str) -> list[str]:
    from phoenix95.streams.stages import STAGES

    topics = Topics(run_id)
    return [topics.group(stage) for stage in STAGES]


async def delete_groups(bootstrap: str, groups: Sequence[str], *, timeout: float = 20.0) -> dict[str, str]:
    """Delete consumer groups (DeleteGroups, sent to each group's coordinator): group -> "deleted",
    "absent" or the error. aiokafka's admin client has no call for it. A group whose members have
    not left yet (a worker just stopped) is retried until `timeout`."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.protocol.admin import DeleteGroupsRequest

    results: dict[str, str] = {}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        existing = {group for group, _protocol in await admin.list_consumer_groups()}
        waiting = [group for group in groups if group in existing]
        results.update({group: "absent" for group in groups if group not in existing})
        deadline = time.monotonic() + timeout
        while waiting:
            retry = []
            for group in waiting:
                coordinator = await admin.find_coordinator(group)
                response = await admin._send_request(DeleteGroupsRequest([group]), coordinator)
                for name, code in response.results:
                    if code == 0:
                        results[name] = "deleted"
                    elif code == GROUP_ID_NOT_FOUND:
                        results[name] = "absent"
                    elif code == NON_EMPTY_GROUP and time.monotonic() < deadline:
                        retry.append(name)
                    else:
                        results[name] = f"not deleted: error code {code}"
            waiting = retry
            if waiting:
                await asyncio.sleep(0.5)
    finally:
        await admin.close()
    return results


async def clean(settings: Settings, run_id: str) -> dict[str, Any]:
    """Delete a kafka-mode run: its topics (the pipeline's and the ones Faust made for the run's
    apps), consumer groups, PostgreSQL schema and Redis keys."""
    from aiokafka.admin import AIOKafkaAdminClient

    from phoenix95.connectors.kafka_admin import delete_topics
    from phoenix95.storage.postgres import drop_schema
    from phoenix95.storage.redis_state import RedisState

    if not run_id.startswith("r") or not run_id[1:].isalnum():
        raise ValueError(f"{run_id!r} is not a replay run id")
    bootstrap = settings.kafka.bootstrap_servers
    groups = await delete_groups(bootstrap, run_groups(run_id))
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        run_topics = sorted(topic for topic in await admin.list_topics() if topic.startswith(f"{run_id}."))
    finally:
        await admin.close()
    await delete_topics(bootstrap, run_topics)
    await drop_schema(settings.postgres_url(), run_id)
    redis = RedisState.from_url(settings.redis_url(), prefix=f"{run_id}:s4:")
    try:
        keys = [key async for key in redis.client.scan_iter(match=f"{run_id}:*", count=1000)]
        if keys:
            await redis.client.delete(*keys)
    finally:
        await redis.close()
    return {
        "run_id": run_id,
        "topics": run_topics,
        "groups": groups,
        "schema": run_id,
        "redis_keys": len(keys),
    }


def equity_curve(
    closed: Sequence[Position], starting: Decimal, first: datetime | None
) -> list[tuple[datetime, Decimal]]:
    curve: list[tuple[datetime, Decimal]] = [(first, starting)] if first else []
    equity = starting
    for position in sorted(closed, key=lambda p: (p.closed_at or p.last_event_time, p.position_id)):
        equity += position.realized_pnl
        curve.append((position.closed_at or position.last_event_time, equity))
    return curve
