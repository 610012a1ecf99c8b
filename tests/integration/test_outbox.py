"""The positions stage's outbox against the real PostgreSQL and broker: a worker killed between
writing a fill's position and producing its "opened" event leaves the event to the next worker,
which produces it before it reads anything (to p95.positions.ticks and p95.positions.lifecycle); the
re-delivered fill then opens nothing twice.

Without the outbox the event is lost for good: the re-delivered fill finds its position written and
produces nothing (the crash test caught that: 979 positions in PostgreSQL, 955 opened on the topic)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from phoenix95.agents.ports import InputRecord, OrderPlaced, Outcome, SignalAnalyzed, VerdictMade
from phoenix95.connectors.kafka_admin import read_records
from phoenix95.domain import ids
from phoenix95.schemas.envelope import Event
from phoenix95.schemas.messages import Order, PositionEvent
from phoenix95.storage.sink import StoreSink
from phoenix95.streams.wiring import StageRuntime
from tests.pipeline import Pipeline
from tests.unit.samples import samples

pytestmark = pytest.mark.integration


@dataclass
class _Message:
    topic: str
    partition: int
    offset: int
    value: bytes
    key: bytes | None = b"BTCUSDT"
    timestamp: float | None = None
    headers: Any = ()


@dataclass
class _Event:
    message: _Message


class _Killed(BaseException):
    pass


class _KilledBeforeProducing:
    async def publish(self, events: Sequence[Event], *, dead_letter_keys: Sequence[bytes | None] = ()) -> None:
        raise _Killed("SIGKILL between the writes and the produce")


def test_a_positions_worker_killed_after_its_writes_leaves_the_opened_event_to_the_next_worker(namespace):
    pipeline = Pipeline(namespace)
    signal, analysis, verdict, order, *_ = samples()
    assert isinstance(order, Order)
    position_id = ids.position_id(order.order_id)
    delivery = [_Event(_Message(pipeline.topics.orders, 0, 0, pipeline.codec.encode(order)))]
    acked: list[Any] = []

    async def ack(event: Any) -> None:
        acked.append(event)

    async def count(sql: str) -> int:
        async with pipeline.database() as db:
            return await pipeline.count(db, sql)

    async def opened_on_topic(topic: str = pipeline.topics.position_ticks) -> list[PositionEvent]:
        events = [
            pipeline.codec.decode(record.value, PositionEvent)
            async for record in read_records(pipeline.settings.kafka.bootstrap_servers, [topic])
        ]
        return [e for e in events if e.kind == "opened" and e.position_id == position_id]

    async def run() -> None:
        await pipeline.prepare()
        async with pipeline.database() as db:  # what the stages before wrote: signal, verdict, order, trade
            record = InputRecord("upstream", 0, 0, None, None, b"")
            upstream = [SignalAnalyzed(signal, analysis), VerdictMade(verdict), OrderPlaced(order, verdict)]
            assert await StoreSink(db, None, None).persist("setup", [Outcome(record, persist=upstream)]) == []
        first = StageRuntime(pipeline.settings, "positions")
        runner = await first.start()
        runner.publisher = _KilledBeforeProducing()
        try:
            with pytest.raises(_Killed):
                await runner.run_batch(delivery, ack)
        finally:
            await first.stop()
        assert acked == []  # nothing committed
        assert await count("SELECT COUNT(*) FROM positions") == 1
        assert await count("SELECT COUNT(*) FROM stage_outbox WHERE stage = 'positions'") == 1
        assert await opened_on_topic() == []

        second = StageRuntime(pipeline.settings, "positions")
        runner = await second.start()  # produces the outbox before the first batch
        try:
            assert await count("SELECT COUNT(*) FROM stage_outbox") == 0
            await runner.run_batch(delivery, ack)  # the re-delivered fill
            assert acked == delivery
            assert runner.stats.produced == 1  # the outbox's event; the fill itself produced nothing
        finally:
            await second.stop()
        opened = await opened_on_topic()
        assert len(opened) == 1 and opened[0].order_id == order.order_id
        # the notification hub's topic got it too, from the outbox, in the same send
        assert await opened_on_topic(pipeline.topics.position_lifecycle) == opened
        assert await count("SELECT COUNT(*) FROM positions") == 1

    asyncio.run(run())
