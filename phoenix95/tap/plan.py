"""Before reading: which topics and partitions, and the offsets to start and stop at.

Everything here asks the broker once, through a consumer without a group (`group_id=None`): it
never joins a group and never commits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from phoenix95.connectors import kafka_admin as admin
from phoenix95.schemas.topics import ALL, SIGNALS, Topics
from phoenix95.tap.positions import Bounds, StartSpec, offset_for_time, start_offset
from phoenix95.tap.source import Partition

#: A stage name on the command line means the topic the stage consumes (prices left out: they
#: would drown the rest; name p95.market.prices to see them).
STAGE_INPUTS: dict[str, str] = {
    "analysis": SIGNALS,
    "risk": "p95.analysis",
    "execution": "p95.risk.verdicts",
    "positions": "p95.orders",
}


class PlanError(ValueError):
    """The topics or partitions asked for do not exist."""


@dataclass(frozen=True)
class PartitionPlan:
    start: int
    #: Exclusive; None: no stop offset (follow).
    stop: int | None
    end_at_start: int

    @property
    def finished(self) -> bool:
        return self.stop is not None and self.start >= self.stop


@dataclass
class ReadPlan:
    partitions: dict[Partition, PartitionPlan]
    notes: list[str] = field(default_factory=list)

    @property
    def bounded(self) -> bool:
        return all(p.stop is not None for p in self.partitions.values())

    @property
    def to_read(self) -> int | None:
        """Records between start and stop over all partitions (None when unbounded)."""
        if not self.bounded:
            return None
        return sum(max(0, (p.stop or 0) - p.start) for p in self.partitions.values())


def resolve_topics(names: Sequence[str], existing: set[str], namespace: str) -> tuple[list[str], list[str]]:
    """Topic names for the command-line arguments, and notes on how they were read."""
    topics = Topics(namespace)
    chosen: list[str] = []
    notes: list[str] = []
    for name in names:
        if name == "all":
            found = [topic for topic in topics.all() if topic in existing]
            missing = [topic for topic in topics.all() if topic not in existing]
            if missing:
                notes.append(f"not created yet: {', '.join(missing)}")
            chosen.extend(found)
        elif name in STAGE_INPUTS:
            topic = topics.name(STAGE_INPUTS[name])
            notes.append(f"{name}: reading {topic} (the input of the {name} stage)")
            chosen.append(topic)
        elif name in existing:
            chosen.append(name)
        elif topics.name(name) in existing:
            chosen.append(topics.name(name))
        elif f"p95.{name}" in ALL and topics.name(f"p95.{name}") in existing:
            chosen.append(topics.name(f"p95.{name}"))
        else:
            hint = f" under namespace {namespace!r}" if namespace else ""
            raise PlanError(f"no topic {name!r}{hint}; existing: {', '.join(sorted(existing)) or 'none'}")
    for topic in chosen:
        if topic not in existing:
            raise PlanError(f"topic {topic} does not exist (yet)")
    return list(dict.fromkeys(chosen)), notes


class OffsetLookup:
    """A group-less consumer for the one-off questions: partitions, bounds, offsets for times."""

    def __init__(self, bootstrap: str):
        self.bootstrap = bootstrap
        self.fetches = 0
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            client_id="p95-tap-lookup",
            request_timeout_ms=15000,
            fetch_max_wait_ms=20,
            max_partition_fetch_bytes=256 * 1024,
        )

    async def __aenter__(self) -> OffsetLookup:
        try:
            await self._consumer.start()
        except BaseException:
            await self._consumer.stop()
            raise
        return self

    async def __aexit__(self, *exc: Any) -> None:
        # Let aiokafka's no-group coordinator task start before it is cancelled: cancelled before
        # its first step, it makes stop() raise CancelledError (when nothing was awaited, e.g. on
        # an unknown partition).
        await asyncio.sleep(0)
        await self._consumer.stop()

    async def topics(self) -> set[str]:
        return set(await self._consumer.topics())

    async def partitions(self, topics: Sequence[str]) -> list[TopicPartition]:
        return await admin.partitions_of(self._consumer, topics)

    async def bounds(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, Bounds]:
        if not partitions:
            return {}
        beginnings = await self._consumer.beginning_offsets(list(partitions))
        topics = sorted({tp.topic for tp in partitions})
        ends = await admin.end_offsets(self.bootstrap, topics)
        return {tp: Bounds(beginnings[tp], max(ends.get(tp, 0), beginnings[tp])) for tp in partitions}

    async def offset_for_time(self, tp: TopicPartition, timestamp_ms: int, bounds: Bounds) -> int:
        """The first offset at or after `timestamp_ms` (see `positions.offset_for_time`)."""
        if bounds.end <= bounds.beginning:
            return bounds.end
        answer = (await self._consumer.offsets_for_times({tp: timestamp_ms})).get(tp)
        self._consumer.assign([tp])
        offset, fetches = await offset_for_time(
            timestamp_ms,
            bounds,
            lambda start: self.timestamps_from(tp, start),
            broker_answer=answer.offset if answer is not None else bounds.end,
        )
        self.fetches += fetches
        return offset

    async def timestamps_from(self, tp: TopicPartition, offset: int, timeout: float = 10.0) -> list[tuple[int, int]]:
        """(offset, timestamp) of the records from `offset` on (the rest of its batch at least)."""
        self._consumer.seek(tp, offset)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batches = await self._consumer.getmany(tp, timeout_ms=200)
            records = batches.get(tp, [])
            if records:
                return [(r.offset, r.timestamp) for r in records if r.offset >= offset]
        raise TimeoutError(f"no record at or after offset {offset} of {tp.topic}[{tp.partition}] in {timeout:.0f}s")


async def make_plan(
    bootstrap: str,
    topics: Sequence[str],
    *,
    start: StartSpec,
    until_ms: int | None,
    partitions: Sequence[int] = (),
    exit_at_end: bool,
    now_ms: int | None = None,
) -> ReadPlan:
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    async with OffsetLookup(bootstrap) as lookup:
        found = await lookup.partitions(topics)
        if partitions:
            wanted = set(partitions)
            missing = wanted - {tp.partition for tp in found}
            if missing:
                raise PlanError(f"no partition {', '.join(map(str, sorted(missing)))} in {', '.join(topics)}")
            found = [tp for tp in found if tp.partition in wanted]
        if not found:
            raise PlanError(f"no partitions in {', '.join(topics)}")
        bounds = await lookup.bounds(found)
        plan = ReadPlan({})
        for tp in found:
            bound = bounds[tp]
            first = start_offset(start, bound)
            if first is None:
                first = await lookup.offset_for_time(tp, start.value, bound)
            stop: int | None = bound.end if exit_at_end else None
            if until_ms is not None and until_ms <= now_ms:
                until_stop = await lookup.offset_for_time(tp, until_ms + 1, bound)
                stop = until_stop if stop is None else min(stop, until_stop)
            plan.partitions[(tp.topic, tp.partition)] = PartitionPlan(first, stop, bound.end)
        if lookup.fetches:
            plan.notes.append(f"time lookups checked with {lookup.fetches} fetches")
        return plan


def plan_now(*args: Any, **kwargs: Any) -> ReadPlan:
    return asyncio.run(make_plan(*args, **kwargs))


async def existing_topics(bootstrap: str) -> set[str]:
    async with OffsetLookup(bootstrap) as lookup:
        return await lookup.topics()
