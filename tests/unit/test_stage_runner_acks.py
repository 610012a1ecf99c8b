"""The batch loop acks a partition whose records a batch finished all at once (and that held nothing
before) straight away, without its per-record bookkeeping (`finished_at_once`). What it acks, and in
which order per partition, is what the bookkeeping for every record gave: the runner is run beside
that code (`BookkeepingRunner`, kept here as the reference) over random batches of several partitions,
with held records released by the clock, records read twice and re-read from below."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix95.agents.base import Stage, StageRunner, finished_at_once, record_key, to_record
from phoenix95.agents.ports import InputRecord, Outcome
from tests.unit.test_stage_runner import FakeEvent, FakeMessage, RecordingPublisher, RecordingSink


class BookkeepingRunner(StageRunner):
    """`run_batch` as it was: every record through `_unacked`."""

    async def run_batch(self, events: Sequence[Any], ack: Any) -> None:
        records = [to_record(event.message) for event in events]
        for record in records:
            partition = (record.topic, record.partition)
            if record.offset > self.read_offsets.get(partition, -1):
                self.read_offsets[partition] = record.offset
        by_key = {record_key(r): e for r, e in zip(records, events, strict=True)}
        async with self._lock:
            started = time.perf_counter()
            outcomes = await self._process_guarded(records)
            await self.commit(outcomes)
            for (topic, partition_number, offset), event in by_key.items():
                pending = self._unacked.setdefault((topic, partition_number), {})
                if pending and offset < next(reversed(pending)):
                    pending[offset] = [event, False]
                    self._unacked[(topic, partition_number)] = dict(sorted(pending.items()))
                else:
                    pending[offset] = [event, False]
            await self._ack_in_order([record_key(o.record) for o in outcomes], ack)
            self._observe(len(records), time.perf_counter() - started)


class HoldingStage(Stage):
    """Finishes every record at once but those whose value is b"wait": the clock finishes those (and
    finishes them again if asked twice)."""

    name = "holding"
    inputs = ("p95.market.prices",)

    def __init__(self) -> None:
        self.waiting: list[InputRecord] = []

    async def process(self, records: Sequence[InputRecord]) -> list[Outcome]:
        outcomes = []
        for record in records:
            if record.value == b"wait":
                self.waiting.append(record)
            else:
                outcomes.append(Outcome(record))
        return outcomes

    async def on_clock(self, now: Any) -> list[Outcome]:
        done, self.waiting = self.waiting, []
        return [Outcome(record) for record in done]

    async def recover(self) -> None:
        pass


# a step: a batch of (partition, offset step, held) records, or None for a clock tick
_record = st.tuples(st.integers(0, 2), st.sampled_from([1, 1, 1, 2, 0, -1, -3]), st.booleans())
_steps = st.lists(st.one_of(st.none(), st.lists(_record, min_size=1, max_size=12)), max_size=14)


def _acks(runner_type: type[StageRunner], steps: list[Any]) -> tuple[dict[int, list[int]], int]:
    runner = runner_type(HoldingStage(), RecordingSink([]), RecordingPublisher([]))
    acked: dict[int, list[int]] = {}

    async def ack(event: FakeEvent) -> None:
        acked.setdefault(event.message.partition, []).append(event.message.offset)

    async def run() -> None:
        offsets = {0: 0, 1: 0, 2: 0}
        for step in steps:
            if step is None:
                await runner.tick(ack)
                continue
            events = []
            for partition, offset_step, held in step:
                offsets[partition] = max(0, offsets[partition] + offset_step)
                value = b"wait" if held else b"a"
                events.append(FakeEvent(FakeMessage("p95.market.prices", partition, offsets[partition], value)))
            await runner.run_batch(events, ack)

    asyncio.run(run())
    return acked, runner.held


@settings(max_examples=150, deadline=None)
@given(steps=_steps)
def test_the_loop_acks_what_the_bookkeeping_of_every_record_acked(steps):
    assert _acks(StageRunner, steps) == _acks(BookkeepingRunner, steps)


def test_a_partition_is_acked_at_once_only_with_increasing_offsets_all_finished():
    records = [InputRecord("t", 0, offset, None, None, b"") for offset in (3, 4, 7)]
    read = [(record, None) for record in records]
    every = {id(record) for record in records}
    assert finished_at_once(read, every)
    assert not finished_at_once(read, every - {id(records[1])})  # one is held
    again = [*read, (InputRecord("t", 0, 7, None, None, b""), None)]
    assert not finished_at_once(again, every | {id(again[-1][0])})  # offset 7 read twice
    below = [read[1], read[0]]
    assert not finished_at_once(below, every)  # re-read from below
