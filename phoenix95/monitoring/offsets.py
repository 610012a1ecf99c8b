"""Reading what lag is made of: end offsets, committed offsets and the timestamp of the oldest
unconsumed message, with long-lived clients (a lag exporter samples every second).

Broker notes (Tansu, checked with aiokafka 0.14):
- ListOffsets (latest and earliest) costs broker CPU in proportion to the partition's record batches
  (measured: 0.4 ms at 1,000, 16 ms at 30,000), and its "latest" answer is the base offset of the last
  batch + 1. A fetch that starts at the end of a partition costs little (0.6 ms at 30,000) and its
  high watermark is exact. So a periodic reader never lists offsets: the end of a partition the worker
  consumes is the high watermark of its own consumer's last fetch (`local_highwater`, free); of any
  other partition, one fetch at the end last seen (cheap unless the partition grew); ListOffsets only
  for a partition seen for the first time. The log start is cached (it moves only with retention).
- The admin client's OffsetFetch works when the partitions are named (not for "all topics").
- DescribeGroups never drops a member that left, so group membership says nothing about liveness.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import TracebackType

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from phoenix95.connectors.kafka_admin import exact_ends, fetched_highwaters, partitions_of

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartitionOffsets:
    """One partition as one consumer group sees it."""

    topic: str
    partition: int
    #: The group's committed offset (the next message it will read); None when it never committed.
    committed: int | None
    #: Log start offset: where a group without a committed offset starts (auto_offset_reset=earliest).
    start: int
    #: The offset the next message will get.
    end: int
    #: Broker timestamp (ms) of the oldest unconsumed message; None when caught up or unreadable.
    oldest_unconsumed_ms: int | None

    @property
    def position(self) -> int:
        return self.committed if self.committed is not None else self.start

    @property
    def lag(self) -> int:
        return max(0, self.end - self.position)


class OffsetReader:
    """An admin client (committed offsets, groups) and a group-less consumer (ends, timestamps)."""

    def __init__(self, bootstrap: str, *, request_timeout_ms: int = 15000, read_timeout_s: float = 5.0):
        self.bootstrap = bootstrap
        self.request_timeout_ms = request_timeout_ms
        self.read_timeout_s = read_timeout_s
        self._clients: tuple[AIOKafkaAdminClient, AIOKafkaConsumer] | None = None
        #: tp -> the exact end last seen.
        self._ends: dict[TopicPartition, int] = {}
        #: tp -> log start offset, and when it was read (monotonic).
        self._starts: dict[TopicPartition, tuple[int, float]] = {}
        #: The high watermark a consumer of this process already has for a partition (None: it has
        #: none, or not fresh), e.g. the stage worker's own consumer: no broker request at all.
        self.local_highwater: Callable[[TopicPartition], int | None] | None = None
        #: Counters of how ends were found (local, fetched at the last end, listed): for the probe.
        self.lookups: dict[str, int] = {"local": 0, "fetched": 0, "listed": 0}
        #: (tp, offset) -> broker timestamp (ms) of the message at that offset.
        self._timestamps: dict[tuple[TopicPartition, int], int] = {}

    async def start(self) -> None:
        """Connect (again: aiokafka clients cannot restart, so each start makes new ones)."""
        if self._clients is not None:
            return
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=self.request_timeout_ms)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=self.request_timeout_ms,
            fetch_max_wait_ms=50,
            # One record is all a timestamp read needs; the broker still returns a whole batch.
            max_partition_fetch_bytes=64 * 1024,
        )
        try:
            await admin.start()
            await consumer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await consumer.stop()
            with contextlib.suppress(Exception):
                await admin.close()
            raise
        self._clients = (admin, consumer)

    async def stop(self) -> None:
        if self._clients is not None:
            admin, consumer = self._clients
            self._clients = None
            with contextlib.suppress(Exception):
                await consumer.stop()
            with contextlib.suppress(Exception):
                await admin.close()

    @property
    def _admin(self) -> AIOKafkaAdminClient:
        if self._clients is None:
            raise RuntimeError("OffsetReader is not started")
        return self._clients[0]

    @property
    def _consumer(self) -> AIOKafkaConsumer:
        if self._clients is None:
            raise RuntimeError("OffsetReader is not started")
        return self._clients[1]

    async def __aenter__(self) -> OffsetReader:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- discovery ---------------------------------------------------------------------------------

    async def groups(self) -> list[str]:
        return sorted(group for group, _protocol in await self._admin.list_consumer_groups())

    async def topics(self) -> list[str]:
        return sorted(topic for topic in await self._admin.list_topics() if not topic.startswith("__"))

    async def topics_committed_by(self, group: str, candidates: Iterable[str]) -> list[str]:
        """The candidate topics on which the group has a committed offset."""
        partitions = await partitions_of(self._consumer, candidates)
        committed = await self._committed(group, partitions)
        return sorted({tp.topic for tp, offset in committed.items() if offset is not None})

    # -- offsets -----------------------------------------------------------------------------------

    async def read(self, groups: Mapping[str, Sequence[str]]) -> dict[str, list[PartitionOffsets]]:
        """Offsets of every partition of each group's topics (topics that do not exist are skipped)."""
        topics = sorted({topic for names in groups.values() for topic in names})
        partitions = await partitions_of(self._consumer, topics)
        by_topic: dict[str, list[TopicPartition]] = {}
        for tp in partitions:
            by_topic.setdefault(tp.topic, []).append(tp)
        ends = await self._end_offsets(partitions)
        starts = await self._start_offsets(partitions)
        committed = {
            group: await self._committed(group, [tp for topic in names for tp in by_topic.get(topic, [])])
            for group, names in groups.items()
        }
        rows = {
            group: [
                PartitionOffsets(tp.topic, tp.partition, offset, starts.get(tp, 0), ends.get(tp, 0), None)
                for tp, offset in sorted(offsets.items(), key=lambda item: (item[0].topic, item[0].partition))
            ]
            for group, offsets in committed.items()
        }
        lagging = [
            (TopicPartition(r.topic, r.partition), r.position) for found in rows.values() for r in found if r.lag
        ]
        timestamps = await self._message_timestamps(lagging)
        return {
            group: [
                replace(r, oldest_unconsumed_ms=timestamps.get((TopicPartition(r.topic, r.partition), r.position)))
                if r.lag
                else r
                for r in found
            ]
            for group, found in rows.items()
        }

    async def _committed(self, group: str, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        if not partitions:
            return {}
        found = await self._admin.list_consumer_group_offsets(group, partitions=list(partitions))
        result: dict[TopicPartition, int | None] = {}
        for tp in partitions:
            entry = found.get(tp)
            result[tp] = entry.offset if entry is not None and entry.offset >= 0 else None
        return result

    #: Re-read a partition's log start this often (seconds): only retention moves it.
    START_TTL_S = 300.0

    async def _start_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        now = time.monotonic()
        stale = [tp for tp in partitions if tp not in self._starts or now - self._starts[tp][1] > self.START_TTL_S]
        if stale:
            for tp, offset in (await self._consumer.beginning_offsets(stale)).items():
                self._starts[tp] = (offset, now)
        return {tp: self._starts[tp][0] for tp in partitions if tp in self._starts}

    async def _end_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        if not partitions:
            return {}
        exact: dict[TopicPartition, int] = {}
        remote: list[TopicPartition] = []
        for tp in partitions:
            local = self.local_highwater(tp) if self.local_highwater is not None else None
            if local is not None:
                exact[tp] = local
                self.lookups["local"] += 1
            else:
                remote.append(tp)
        known = {tp: self._ends[tp] for tp in remote if tp in self._ends}
        if known:
            fetched = await fetched_highwaters(self._consumer, known, timeout=self.read_timeout_s)
            exact.update(fetched)
            self.lookups["fetched"] += len(fetched)
        unknown = [tp for tp in remote if tp not in exact]
        if unknown:  # first sight (or no answer at the last end): ListOffsets once, then the exact end
            reported = dict(await self._consumer.end_offsets(unknown))
            exact.update(await exact_ends(self._consumer, reported, timeout=self.read_timeout_s))
            self.lookups["listed"] += len(unknown)
        self._ends.update(exact)
        return exact

    async def _message_timestamps(
        self, wanted: Sequence[tuple[TopicPartition, int]]
    ) -> dict[tuple[TopicPartition, int], int]:
        """Broker timestamps of the messages at the given offsets (cached: a message never changes).

        Several groups may lag on one partition at different offsets: each round seeks every partition
        to one of its offsets, until all are read or the time is up."""
        found = {key: self._timestamps[key] for key in wanted if key in self._timestamps}
        pending = [key for key in dict.fromkeys(wanted) if key not in found]
        deadline = time.monotonic() + self.read_timeout_s
        while pending and time.monotonic() < deadline:
            this_round: dict[TopicPartition, int] = {}
            later = []
            for tp, offset in pending:
                if tp in this_round:
                    later.append((tp, offset))
                else:
                    this_round[tp] = offset
            found.update(await self._first_records(this_round, deadline))
            pending = [key for key in this_round.items() if key not in found] + later
        if pending:
            logger.warning(
                "lag: no message read at %s",
                ", ".join(f"{tp.topic}[{tp.partition}]@{offset}" for tp, offset in pending),
            )
        self._timestamps = dict(found)
        return found

    async def _first_records(
        self, offsets: Mapping[TopicPartition, int], deadline: float
    ) -> dict[tuple[TopicPartition, int], int]:
        self._consumer.assign(sorted(offsets))
        for tp, offset in offsets.items():
            self._consumer.seek(tp, offset)
        found: dict[tuple[TopicPartition, int], int] = {}
        pending = set(offsets)
        while pending and time.monotonic() < deadline:
            batches = await self._consumer.getmany(*pending, timeout_ms=200)
            for tp, records in batches.items():
                if records and tp in pending:
                    found[(tp, offsets[tp])] = records[0].timestamp
                    pending.discard(tp)
        self._consumer.assign([])  # no background fetching between samples
        return found
