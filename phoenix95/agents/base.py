"""The loop every stage runs inside its Faust agent.

Per batch of raw records:

1. the stage decodes and decides (`Stage.process`), one `Outcome` per finished record; a record it
   returns no outcome for is *held* (e.g. an order waiting for the next market price) and stays
   un-acked, so its offset is not committed;
2. the sink writes the facts (PostgreSQL, then Redis, then the time series), retrying transient
   failures while the partition waits; an input whose writes fail permanently is dead-lettered;
3. the outputs and dead letters are produced and the broker's acknowledgement awaited;
4. only then are the records acked, and Faust commits their offsets.

A stage with `uses_outbox` (its outputs cannot be derived again from what it wrote) also writes
its outputs into the outbox in step 2, in the same transaction; they are deleted after step 3, and a
starting worker produces whatever is left before it reads anything (`StageRunner.drain_outbox`).

Nothing the stage does can crash the loop: an unexpected exception for one record dead-letters that
record (PROCESSING_ERROR) and the others go on. Faust's own behaviour of acking a message whose agent
raised is thereby never reached.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from phoenix95.agents.ports import InputRecord, Outbox, Outcome, Publisher, Sink
from phoenix95.schemas.codec import Reason
from phoenix95.schemas.convert import dead_letter
from phoenix95.schemas.envelope import Event

logger = logging.getLogger(__name__)


def record_key(record: InputRecord) -> tuple[str, int, int]:
    return (record.topic, record.partition, record.offset)


@dataclass
class StageStats:
    processed: int = 0
    dead_lettered: int = 0
    failed_writes: int = 0
    produced: int = 0
    batches: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    #: Seconds spent, per step (telemetry).
    seconds: dict[str, float] = field(default_factory=lambda: {"process": 0.0, "persist": 0.0, "publish": 0.0})

    def summary(self, held: int) -> str:
        average = self.processed / self.batches if self.batches else 0.0
        spent = ", ".join(f"{step} {value:.1f}s" for step, value in self.seconds.items())
        return (
            f"{self.processed} records in {self.batches} batches (avg {average:.0f}), {self.produced} produced, "
            f"{self.dead_lettered} dead-lettered, {held} held; {spent}"
        )


class Stage(ABC):
    """One pipeline stage: decode -> domain -> outcomes. No I/O except through its ports."""

    name: str = "stage"
    #: Base names of the topics the stage consumes (name and inputs come from `streams/stages.py`;
    #: so does how often `on_clock` runs).
    inputs: tuple[str, ...] = ()
    #: Write the outputs through the outbox (see `Outbox`): for a stage that, given a re-delivered
    #: input whose writes are done, cannot produce its outputs again.
    uses_outbox: bool = False

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Load state (e.g. open positions) before the first batch."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        pass

    @abstractmethod
    async def process(self, records: Sequence[InputRecord]) -> list[Outcome]:
        """Outcomes of the finished records (records without one are held)."""

    async def on_clock(self, now: datetime) -> list[Outcome]:
        """Timer work (monitoring ticks, quiet-feed fills); outcomes may finish held records."""
        return []

    def reset(self) -> None:  # noqa: B027 - optional hook
        """Forget in-memory state (partitions were revoked; their records will be re-delivered)."""

    async def recover(self) -> None:
        """Make in-memory state equal to what the stores hold (after a failure or an assignment)."""
        self.reset()
        await self.start()


class StageRunner:
    """Drives a stage from a Faust stream with commit-after-write semantics."""

    def __init__(
        self, stage: Stage, sink: Sink, publisher: Publisher, *, metrics: Any = None, outbox: Outbox | None = None
    ):
        if stage.uses_outbox and outbox is None:
            raise ValueError(f"stage {stage.name} writes its outputs through an outbox: give it one")
        self.stage = stage
        self.sink = sink
        self.publisher = publisher
        self.metrics = metrics
        self.outbox = outbox if stage.uses_outbox else None
        #: Outbox entries produced whose deletion failed (tried again after the next batch).
        self._produced_entries: list[str] = []
        self.stats = StageStats()
        #: Per partition, the records read and not yet acked, in offset order: offset -> [event, finished].
        #: A finished record is acked only once every earlier record of its partition is finished too
        #: (see `_ack_in_order`).
        self._unacked: dict[tuple[str, int], dict[int, list[Any]]] = {}
        self._lock = asyncio.Lock()
        #: Highest offset read per (topic, partition): a broker whose log went below it lost data.
        self.read_offsets: dict[tuple[str, int], int] = {}

    @property
    def held(self) -> int:
        """Records read but not yet acknowledged (waiting for a price, say)."""
        return sum(1 for pending in self._unacked.values() for _, finished in pending.values() if not finished)

    async def run_batch(self, events: Sequence[Any], ack: Any, *, read: Any = None) -> None:
        """Process a batch of events read from the broker; `ack(event)` acks one. `read(event)` makes
        the stage's `InputRecord` of one: by default of a Faust event (it carries `.message`); the
        direct loop passes aiokafka's records with `from_consumer_record`."""
        records = [read(event) for event in events] if read is not None else [to_record(e.message) for e in events]
        # the batch per partition: (record, event) in the order read
        by_partition: dict[tuple[str, int], list[tuple[InputRecord, Any]]] = {}
        for record, event in zip(records, events, strict=True):
            read = by_partition.get((record.topic, record.partition))
            if read is None:
                by_partition[(record.topic, record.partition)] = [(record, event)]
            else:
                read.append((record, event))
        for partition, read in by_partition.items():
            highest = max(record.offset for record, _ in read)
            if highest > self.read_offsets.get(partition, -1):
                self.read_offsets[partition] = highest
        async with self._lock:
            started = time.perf_counter()
            outcomes = await self._process_guarded(records)
            self.stats.seconds["process"] += time.perf_counter() - started
            await self.commit(outcomes)
            await self._ack_batch(by_partition, outcomes, ack)
            self._observe(len(records), time.perf_counter() - started)

    async def _ack_batch(
        self, by_partition: dict[tuple[str, int], list[tuple[InputRecord, Any]]], outcomes: list[Outcome], ack: Any
    ) -> None:
        """Ack what the batch finished, in offset order per partition. A partition that held nothing
        before and whose records of the batch were all finished, in increasing offsets, is acked
        straight away (`finished_at_once`); the others go through `_unacked` (see `_ack_in_order`)."""
        finished = {id(outcome.record) for outcome in outcomes}
        acked: set[int] = set()
        for partition, read in by_partition.items():
            if partition not in self._unacked and finished_at_once(read, finished):
                for record, event in read:
                    acked.add(id(record))
                    await ack(event)
                continue
            pending = self._unacked.setdefault(partition, {})
            for record, event in read:
                if pending and record.offset < next(reversed(pending)):
                    pending[record.offset] = [event, False]  # re-read below a record still pending: keep offset order
                    pending = self._unacked[partition] = dict(sorted(pending.items()))
                else:
                    pending[record.offset] = [event, False]
        await self._ack_in_order([record_key(o.record) for o in outcomes if id(o.record) not in acked], ack)

    async def tick(self, ack: Any) -> None:
        async with self._lock:
            try:
                outcomes = await self.stage.on_clock(datetime.now(UTC))
            except Exception:
                logger.exception("stage %s: timer failed", self.stage.name)
                return
            if not outcomes:
                return
            try:
                await self.commit(outcomes)
            except Exception:
                logger.exception("stage %s: writing timer outcomes failed; reloading state", self.stage.name)
                await self._reload()
                try:
                    await self._drain_outbox()  # what was written but not produced
                except Exception:
                    logger.exception("stage %s: producing the outbox failed; a restart produces it", self.stage.name)
                return
            await self._ack_in_order([record_key(o.record) for o in outcomes], ack)

    async def _ack_in_order(self, finished: Sequence[tuple[str, int, int]], ack: Any) -> None:
        """Mark records finished, then ack each partition's finished records from its oldest pending one
        up to the first still held. Faust commits the first run of consecutive acked offsets past the
        committed one without noticing a single missing offset at its head: acking a later record while
        an earlier one is held (a verdict waiting for its price) would commit past the held record, and a
        worker killed then would lose it."""
        touched: set[tuple[str, int]] = set()
        for topic, partition, offset in finished:
            entry = self._unacked.get((topic, partition), {}).get(offset)
            if entry is not None:
                entry[1] = True
                touched.add((topic, partition))
        for tp in touched:
            pending = self._unacked[tp]
            while pending:
                offset = next(iter(pending))
                event, done = pending[offset]
                if not done:
                    break
                del pending[offset]
                await ack(event)
            if not pending:
                del self._unacked[tp]

    def forget_held(self) -> None:
        """Partitions were revoked: their un-acked records will be re-delivered to the new owner."""
        self._unacked.clear()
        self.stage.reset()

    async def reload(self) -> None:
        """Rebuild the stage's in-memory state from the stores (after an assignment or a failure)."""
        async with self._lock:
            await self._reload()
            await self._drain_outbox()

    async def _reload(self) -> None:
        await self.stage.recover()

    async def drain_outbox(self) -> int:
        """Produce what an earlier worker wrote to the outbox but may not have produced (it was
        killed in between); run before the first batch. Returns the number of events produced."""
        async with self._lock:
            return await self._drain_outbox()

    async def _drain_outbox(self) -> int:
        if self.outbox is None:
            return 0
        pending = await self.outbox.pending(self.stage.name)
        events = [event for _, entry in pending for event in entry]
        if events:
            logger.warning(
                "stage %s: producing %d events of %d outbox entries written but not confirmed as produced "
                "(a worker stopped between its writes and its produce)",
                self.stage.name,
                len(events),
                len(pending),
            )
            await self.publisher.publish(events)
            self.stats.produced += len(events)
        await self._entries_produced([outbox_id for outbox_id, _ in pending])
        return len(events)

    async def _entries_produced(self, outbox_ids: list[str]) -> None:
        assert self.outbox is not None
        todo = self._produced_entries + outbox_ids
        if not todo:
            return
        try:
            await self.outbox.done(todo)
        except Exception as error:  # harmless: a leftover entry is produced again (same event ids)
            logger.warning("stage %s: could not delete %d outbox entries: %s", self.stage.name, len(todo), error)
            self._produced_entries = todo
        else:
            self._produced_entries = []

    async def _process_guarded(self, records: Sequence[InputRecord]) -> list[Outcome]:
        try:
            return await self.stage.process(records)
        except Exception as error:
            if len(records) == 1:
                logger.exception(
                    "stage %s: processing %s[%d]@%d failed",
                    self.stage.name,
                    records[0].topic,
                    records[0].partition,
                    records[0].offset,
                )
                # The stage may have changed its state before it raised: rebuild it from the stores.
                await self._reload()
                return [
                    Outcome(
                        records[0],
                        dead_letter=dead_letter(
                            self.stage.name, records[0], Reason.PROCESSING_ERROR, f"{type(error).__name__}: {error}"
                        ),
                    )
                ]
            logger.warning(
                "stage %s: batch of %d failed (%s); processing one by one", self.stage.name, len(records), error
            )
            await self._reload()
        outcomes: list[Outcome] = []
        for record in records:
            outcomes.extend(await self._process_guarded([record]))
        return outcomes

    async def commit(self, outcomes: list[Outcome]) -> None:
        """Persist, then produce; replaces outcomes whose writes failed permanently by dead letters."""
        started = time.perf_counter()
        entries: list[str] = []
        if self.outbox is not None:
            for outcome in outcomes:
                if outcome.produce:
                    entry = self.outbox.entry(self.stage.name, outcome.produce)
                    outcome.persist.append(entry)
                    entries.append(entry.outbox_id)
        failures = await self.sink.persist(self.stage.name, outcomes)
        self.stats.seconds["persist"] += time.perf_counter() - started
        if failures:
            replaced = []
            for index, error in failures:
                original = outcomes[index]
                logger.error(
                    "stage %s: writes for %s[%d]@%d failed permanently: %s",
                    self.stage.name,
                    original.record.topic,
                    original.record.partition,
                    original.record.offset,
                    error,
                )
                outcomes[index] = Outcome(
                    original.record,
                    dead_letter=dead_letter(
                        self.stage.name, original.record, Reason.SINK_REJECTED, f"{type(error).__name__}: {error}"
                    ),
                )
                replaced.append(outcomes[index])
                self.stats.failed_writes += 1
            still = await self.sink.persist(self.stage.name, replaced)
            for _index, error in still:
                logger.error("stage %s: could not record dead letter in PostgreSQL: %s", self.stage.name, error)
            # The stage may have changed its in-memory state for inputs whose writes failed: rebuild it
            # from the stores, which hold exactly what was written.
            await self._reload()
        produced: list[Event] = []
        for outcome in outcomes:
            produced.extend(outcome.produce)
            if outcome.dead_letter is not None:
                produced.append(outcome.dead_letter)
                reason = outcome.dead_letter.reason
                self.stats.by_reason[reason] = self.stats.by_reason.get(reason, 0) + 1
                self.stats.dead_lettered += 1
                logger.warning(
                    "stage %s: dead-lettered %s[%d]@%d: %s %s",
                    self.stage.name,
                    outcome.record.topic,
                    outcome.record.partition,
                    outcome.record.offset,
                    reason,
                    outcome.dead_letter.error[:200],
                )
        started = time.perf_counter()
        await self.publisher.publish(produced)
        if self.outbox is not None:
            # entries of outcomes that failed were never written: deleting their ids is a no-op
            await self._entries_produced(entries)
        self.stats.seconds["publish"] += time.perf_counter() - started
        self.stats.processed += len(outcomes)
        self.stats.produced += len(produced)
        self.stats.batches += 1
        if self.metrics is not None:
            self.metrics.observe_outcomes(self.stage.name, outcomes)

    def _observe(self, size: int, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.observe_batch(self.stage.name, size, seconds)


def finished_at_once(read: Sequence[tuple[InputRecord, Any]], finished: set[int]) -> bool:
    """Whether a partition's records of a batch can be acked as read: offsets strictly increasing
    (no record read twice) and every record finished (`finished`: the ids of the records that have an
    outcome)."""
    previous = -1
    for record, _ in read:
        if record.offset <= previous or id(record) not in finished:
            return False
        previous = record.offset
    return True


def to_record(message: Any) -> InputRecord:
    timestamp = getattr(message, "timestamp", None)
    when = datetime.fromtimestamp(timestamp, tz=UTC) if timestamp else None
    headers = getattr(message, "headers", None)
    if not headers:
        header_items: tuple[tuple[str, bytes | None], ...] = ()
    elif isinstance(headers, dict):
        header_items = tuple((str(k), v) for k, v in headers.items())
    else:
        header_items = tuple((str(k), v) for k, v in headers)
    return InputRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp=when,
        key=message.key,
        value=message.value if message.value is not None else b"",
        headers=header_items,
    )


def from_consumer_record(message: Any) -> InputRecord:
    """An aiokafka `ConsumerRecord` (its timestamp in milliseconds) as an `InputRecord`."""
    timestamp = message.timestamp
    headers = message.headers
    return InputRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp=datetime.fromtimestamp(timestamp / 1000, tz=UTC) if timestamp else None,
        key=message.key,
        value=message.value if message.value is not None else b"",
        headers=tuple((str(k), v) for k, v in headers) if headers else (),
    )
