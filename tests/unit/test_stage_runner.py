"""The batch loop every stage runs in, with fake ports: a record the stage chokes on becomes a
PROCESSING_ERROR dead letter and the others go on; a permanent write failure becomes SINK_REJECTED;
nothing is acked before its writes and outputs succeeded; a held record is acked only once finished."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from phoenix95.agents.base import Stage, StageRunner
from phoenix95.agents.ports import InputRecord, Outboxed, Outcome, PriceObserved
from phoenix95.schemas.envelope import Event
from tests.unit.samples import samples


@dataclass
class FakeEvent:
    message: Any


@dataclass
class FakeMessage:
    topic: str
    partition: int
    offset: int
    value: bytes
    key: bytes | None = b"XRPUSDT"
    timestamp: float | None = 1_700_000_000.0
    headers: Any = ()


@dataclass
class RecordingSink:
    log: list[str]
    #: indexes (in the batch handed to persist) that fail permanently
    reject: set[bytes] = field(default_factory=set)
    batches: list[list[Outcome]] = field(default_factory=list)

    async def persist(self, stage: str, outcomes: Sequence[Outcome]) -> list[tuple[int, Exception]]:
        self.batches.append(list(outcomes))
        self.log.append(f"persist {len(outcomes)}")
        return [
            (index, ValueError("check constraint violated"))
            for index, outcome in enumerate(outcomes)
            if outcome.record.value in self.reject and outcome.dead_letter is None
        ]


@dataclass
class RecordingPublisher:
    log: list[str]
    events: list[Event] = field(default_factory=list)

    async def publish(self, events: Sequence[Event], *, dead_letter_keys: Sequence[bytes | None] = ()) -> None:
        self.events.extend(events)
        self.log.append(f"publish {len(events)}")


class PickyStage(Stage):
    """Emits a price fact for every record; raises on b"boom"; holds b"wait" until the clock ticks."""

    name = "picky"
    inputs = ("p95.market.prices",)

    def __init__(self) -> None:
        self.price = samples()[5]
        self.reloads = 0
        self.waiting: list[InputRecord] = []

    async def process(self, records: Sequence[InputRecord]) -> list[Outcome]:
        outcomes = []
        for record in records:
            if record.value == b"boom":
                raise RuntimeError("a bug met on one record")
            if record.value == b"wait":
                self.waiting.append(record)
                continue
            outcomes.append(Outcome(record, produce=[self.price], persist=[PriceObserved(self.price)]))
        return outcomes

    async def on_clock(self, now: Any) -> list[Outcome]:
        done, self.waiting = self.waiting, []
        return [Outcome(record, produce=[self.price]) for record in done]

    async def recover(self) -> None:
        self.reloads += 1


def _events(*values: bytes) -> list[FakeEvent]:
    return [FakeEvent(FakeMessage("p95.market.prices", 0, offset, value)) for offset, value in enumerate(values)]


def _runner(
    reject: set[bytes] | None = None,
) -> tuple[StageRunner, PickyStage, RecordingSink, RecordingPublisher, list]:
    log: list[str] = []
    stage = PickyStage()
    sink = RecordingSink(log, reject or set())
    publisher = RecordingPublisher(log)
    return StageRunner(stage, sink, publisher), stage, sink, publisher, log


def _acker(log: list[str]) -> Any:
    async def ack(event: FakeEvent) -> None:
        log.append(f"ack {event.message.offset}")

    return ack


def test_a_record_the_stage_chokes_on_is_dead_lettered_as_processing_error_and_the_rest_go_on():
    runner, stage, _sink, publisher, log = _runner()
    asyncio.run(runner.run_batch(_events(b"a", b"boom", b"c"), _acker(log)))
    dead = [e for e in publisher.events if e.SCHEMA_NAME == "phoenix95.DeadLetter"]
    assert len(dead) == 1 and dead[0].reason == "PROCESSING_ERROR" and dead[0].source_offset == 1
    assert "RuntimeError: a bug met on one record" in dead[0].error and dead[0].original_value == b"boom"
    assert len([e for e in publisher.events if e.SCHEMA_NAME != "phoenix95.DeadLetter"]) == 2
    assert stage.reloads >= 1  # its state rebuilt from the stores after the failure
    assert sorted(entry for entry in log if entry.startswith("ack")) == ["ack 0", "ack 1", "ack 2"]
    assert runner.stats.by_reason == {"PROCESSING_ERROR": 1}


def test_a_permanent_write_failure_is_dead_lettered_as_sink_rejected_and_recorded():
    runner, stage, sink, publisher, log = _runner(reject={b"b"})
    asyncio.run(runner.run_batch(_events(b"a", b"b", b"c"), _acker(log)))
    dead = [e for e in publisher.events if e.SCHEMA_NAME == "phoenix95.DeadLetter"]
    assert [(d.reason, d.source_offset) for d in dead] == [("SINK_REJECTED", 1)]
    assert "check constraint violated" in dead[0].error
    # the dead letter itself was handed to the sink (the dead_letters table), and the failed input's
    # own outputs were not produced
    assert any(o.dead_letter is not None for o in sink.batches[1])
    assert len([e for e in publisher.events if e.SCHEMA_NAME != "phoenix95.DeadLetter"]) == 2
    assert stage.reloads == 1 and runner.stats.failed_writes == 1


def test_nothing_is_acked_before_its_writes_and_outputs_succeeded():
    runner, _stage, _sink, _publisher, log = _runner()
    asyncio.run(runner.run_batch(_events(b"a", b"b"), _acker(log)))
    assert log == ["persist 2", "publish 2", "ack 0", "ack 1"]


def test_a_failing_write_acks_nothing():
    class BrokenSink(RecordingSink):
        async def persist(self, stage: str, outcomes: Sequence[Outcome]) -> list[tuple[int, Exception]]:
            raise ConnectionError("database gone")

    log: list[str] = []
    runner = StageRunner(PickyStage(), BrokenSink(log), RecordingPublisher(log))
    with pytest.raises(ConnectionError):
        asyncio.run(runner.run_batch(_events(b"a"), _acker(log)))
    assert not any(entry.startswith("ack") for entry in log)


def test_a_held_record_is_acked_only_when_its_outcome_is_written():
    runner, _stage, _sink, _publisher, log = _runner()
    ack = _acker(log)
    asyncio.run(runner.run_batch(_events(b"a", b"wait"), ack))
    assert [entry for entry in log if entry.startswith("ack")] == ["ack 0"] and runner.held == 1
    asyncio.run(runner.tick(ack))
    assert log[-3:] == ["persist 1", "publish 1", "ack 1"] and runner.held == 0


def test_records_after_a_held_one_are_acked_only_once_the_held_one_is_finished():
    """Faust commits the first run of consecutive acked offsets without seeing one missing offset at its
    head: acking offsets 2 and 3 while 1 is held would commit past 1, and a kill would lose it."""
    runner, _stage, _sink, _publisher, log = _runner()
    ack = _acker(log)
    asyncio.run(runner.run_batch(_events(b"a", b"wait", b"b", b"c"), ack))
    assert [entry for entry in log if entry.startswith("ack")] == ["ack 0"] and runner.held == 1
    asyncio.run(runner.run_batch([FakeEvent(FakeMessage("p95.market.prices", 0, 4, b"d"))], ack))
    assert [entry for entry in log if entry.startswith("ack")] == ["ack 0"] and runner.held == 1
    asyncio.run(runner.tick(ack))
    assert [entry for entry in log if entry.startswith("ack")] == ["ack 0", "ack 1", "ack 2", "ack 3", "ack 4"]
    assert runner.held == 0


def test_a_held_record_holds_back_only_its_own_partition():
    runner, _stage, _sink, _publisher, _log = _runner()
    acked: list[tuple[int, int]] = []

    async def ack(event: FakeEvent) -> None:
        acked.append((event.message.partition, event.message.offset))

    events = [
        FakeEvent(FakeMessage("p95.market.prices", 0, 0, b"wait")),
        FakeEvent(FakeMessage("p95.market.prices", 1, 0, b"a")),
        FakeEvent(FakeMessage("p95.market.prices", 0, 1, b"b")),
        FakeEvent(FakeMessage("p95.market.prices", 1, 1, b"c")),
    ]
    asyncio.run(runner.run_batch(events, ack))
    assert acked == [(1, 0), (1, 1)] and runner.held == 1
    asyncio.run(runner.tick(ack))
    assert acked == [(1, 0), (1, 1), (0, 0), (0, 1)] and runner.held == 0


# -- the outbox -----------------------------------------------------------------------------------


@dataclass
class FakeOutbox:
    """The outbox's table; `OutboxSink` writes its entries as PostgreSQL would, with the rows."""

    log: list[str]
    entries: dict[str, list[Event]] = field(default_factory=dict)

    def entry(self, stage: str, events: Sequence[Event]) -> Outboxed:
        outbox_id = "-".join(e.event_id for e in events)
        self._events = {**getattr(self, "_events", {}), outbox_id: list(events)}
        return Outboxed(outbox_id, stage, b"")

    async def pending(self, stage: str) -> list[tuple[str, list[Event]]]:
        return list(self.entries.items())

    async def done(self, outbox_ids: Sequence[str]) -> None:
        self.log.append(f"outbox done {len(outbox_ids)}")
        for outbox_id in outbox_ids:
            self.entries.pop(outbox_id, None)


@dataclass
class OutboxSink(RecordingSink):
    outbox: FakeOutbox | None = None

    async def persist(self, stage: str, outcomes: Sequence[Outcome]) -> list[tuple[int, Exception]]:
        failures = await super().persist(stage, outcomes)
        failed = {index for index, _ in failures}
        assert self.outbox is not None
        for index, outcome in enumerate(outcomes):
            for fact in outcome.persist:
                if isinstance(fact, Outboxed) and index not in failed:
                    self.outbox.entries[fact.outbox_id] = self.outbox._events[fact.outbox_id]
        return failures


class OutboxStage(PickyStage):
    """Produces one distinct price event per record."""

    uses_outbox = True

    async def process(self, records: Sequence[InputRecord]) -> list[Outcome]:
        outcomes = await super().process(records)
        for outcome in outcomes:
            event = self.price.model_copy(update={"event_id": f"price-{outcome.record.offset}"})
            outcome.produce[:] = [event]
        return outcomes


class KilledPublisher(RecordingPublisher):
    async def publish(self, events: Sequence[Event], *, dead_letter_keys: Sequence[bytes | None] = ()) -> None:
        raise SystemExit("killed between the writes and the produce")


def test_an_outbox_stage_writes_its_outputs_with_its_rows_and_deletes_them_once_produced():
    log: list[str] = []
    outbox = FakeOutbox(log)
    sink = OutboxSink(log, outbox=outbox)
    runner = StageRunner(OutboxStage(), sink, RecordingPublisher(log), outbox=outbox)
    asyncio.run(runner.run_batch(_events(b"a", b"b"), _acker(log)))
    assert log == ["persist 2", "publish 2", "outbox done 2", "ack 0", "ack 1"]
    written = [fact for outcome in sink.batches[0] for fact in outcome.persist if isinstance(fact, Outboxed)]
    assert len(written) == 2 and outbox.entries == {}


def test_a_worker_killed_between_its_writes_and_its_produce_leaves_its_outputs_to_the_next_worker():
    log: list[str] = []
    outbox = FakeOutbox(log)
    killed = StageRunner(OutboxStage(), OutboxSink(log, outbox=outbox), KilledPublisher(log), outbox=outbox)
    with pytest.raises(SystemExit):
        asyncio.run(killed.run_batch(_events(b"a"), _acker(log)))
    assert not any(entry.startswith("ack") for entry in log) and len(outbox.entries) == 1
    left = next(iter(outbox.entries.values()))

    publisher = RecordingPublisher(log)
    successor = StageRunner(OutboxStage(), OutboxSink(log, outbox=outbox), publisher, outbox=outbox)
    assert asyncio.run(successor.drain_outbox()) == 1
    assert publisher.events == left and outbox.entries == {}


def test_a_stage_that_needs_an_outbox_refuses_to_run_without_one():
    with pytest.raises(ValueError, match="outbox"):
        StageRunner(OutboxStage(), RecordingSink([]), RecordingPublisher([]))


def test_the_outputs_of_an_input_whose_writes_failed_are_not_left_in_the_outbox():
    log: list[str] = []
    outbox = FakeOutbox(log)
    runner = StageRunner(
        OutboxStage(), OutboxSink(log, reject={b"b"}, outbox=outbox), KilledPublisher(log), outbox=outbox
    )
    with pytest.raises(SystemExit):
        asyncio.run(runner.run_batch(_events(b"a", b"b", b"c"), _acker(log)))
    assert sorted(outbox.entries) == ["price-0", "price-2"]
