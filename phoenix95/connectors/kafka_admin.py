"""Topic administration and offset reading (aiokafka admin and a group-less consumer)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

logger = logging.getLogger(__name__)


async def ensure_topics(
    bootstrap: str,
    names: Iterable[str],
    *,
    partitions: int,
    replication_factor: int = 1,
    counts: Mapping[str, int] | None = None,
) -> list[str]:
    """Create the topics that do not exist yet (with `counts[name]` partitions when given, else
    `partitions`); returns the ones created."""
    counts = counts or {}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in names if name not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(name, counts.get(name, partitions), replication_factor) for name in missing]
                )
            except TopicAlreadyExistsError:
                pass
            logger.info("created topics %s", ", ".join(missing))
        return missing
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, names: Iterable[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [name for name in names if name in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


async def end_offsets(bootstrap: str, topics: Iterable[str], *, exact: bool = True) -> dict[TopicPartition, int]:
    """End offset (the next offset to be written) of every partition of the topics.

    Tansu answers ListOffsets(latest) with the base offset of the partition's last record batch
    + 1, not its last offset + 1: six messages produced in one batch report an end offset of 1.
    With `exact` (the default) the last batch is read to find the true end; Apache Kafka's answer
    is already exact and the read only confirms it.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        request_timeout_ms=15000,
        max_partition_fetch_bytes=16 * 1024 * 1024,
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    try:
        partitions = await partitions_of(consumer, topics)
        if not partitions:
            return {}
        reported = dict(await consumer.end_offsets(partitions))
        return await exact_ends(consumer, reported) if exact else reported
    finally:
        await consumer.stop()


async def read_records(bootstrap: str, topics: Iterable[str], *, idle_ms: int = 2000) -> AsyncIterator[Any]:
    """Every record of the topics from the beginning to their end as of now (no consumer group,
    nothing committed), partition by partition in offset order; stops early if the broker has
    nothing more for `idle_ms`."""
    topics = list(topics)
    ends = await end_offsets(bootstrap, topics)
    partitions = [tp for tp, end in ends.items() if end > 0]
    if not partitions:
        # nothing to read (and aiokafka's consumer, stopped before its first poll, raises
        # CancelledError from its close)
        return
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, 0)
        remaining = set(partitions)
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=idle_ms)
            if not batches:
                break
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= ends[tp] - 1:
                        remaining.discard(tp)
                    if record.offset < ends[tp]:
                        yield record
    finally:
        await consumer.stop()


async def partitions_of(consumer: AIOKafkaConsumer, topics: Iterable[str]) -> list[TopicPartition]:
    partitions: list[TopicPartition] = []
    for topic in topics:
        found = consumer.partitions_for_topic(topic)
        if found is None:
            with contextlib.suppress(Exception):
                await consumer._client.force_metadata_update()
            found = consumer.partitions_for_topic(topic)
        partitions.extend(TopicPartition(topic, p) for p in sorted(found or ()))
    return partitions


async def fetched_highwaters(
    consumer: AIOKafkaConsumer, positions: Mapping[TopicPartition, int], timeout: float = 5.0
) -> dict[TopicPartition, int]:
    """The high watermark (exact end) of each partition, from one fetch response at the given offset.

    On Tansu a fetch costs broker CPU in proportion to the partition's record batches when it
    returns records, but little when it starts at the end (nothing to return); ListOffsets always
    costs the former. So a reader that knows where a partition ended fetches there: it pays only when
    the partition grew. A position past the log's end (the broker lost data) is reset to the log's
    start by the consumer (auto_offset_reset) and fetched again. Partitions without an answer within
    `timeout` are left out. The consumer is left unassigned (no background fetching)."""
    if not positions:
        return {}
    consumer.assign(sorted(positions))
    before: dict[TopicPartition, int | None] = {}
    for tp, offset in positions.items():
        before[tp] = consumer.last_poll_timestamp(tp)
        consumer.seek(tp, max(0, offset))
    found: dict[TopicPartition, int] = {}
    deadline = time.monotonic() + timeout
    try:
        pending = set(positions)
        while pending and time.monotonic() < deadline:
            # bounded even if the client's fetch never completes (seen once under heavy load)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(consumer.getmany(*pending, timeout_ms=20), 1.0)
            for tp in list(pending):
                stamp = consumer.last_poll_timestamp(tp)
                highwater = consumer.highwater(tp)
                if stamp is not None and stamp != before[tp] and highwater is not None:
                    found[tp] = highwater
                    pending.discard(tp)
    finally:
        consumer.assign([])
    return found


async def exact_ends(
    consumer: AIOKafkaConsumer, reported: dict[TopicPartition, int], timeout: float = 5.0
) -> dict[TopicPartition, int]:
    exact = dict(reported)
    pending = {tp for tp, offset in reported.items() if offset > 0}
    if not pending:
        return exact
    consumer.assign(sorted(pending))
    for tp in pending:
        consumer.seek(tp, reported[tp] - 1)
    deadline = time.monotonic() + timeout
    reached: set[TopicPartition] = set()
    while pending and time.monotonic() < deadline:
        batches = await consumer.getmany(*pending, timeout_ms=60 if reached else 200)
        fresh = set()
        for tp, records in batches.items():
            if records:
                exact[tp] = max(exact[tp], records[-1].offset + 1)
                fresh.add(tp)
        # the last batch may come in more than one piece: a partition is done when, having
        # returned records, it returns none
        for tp in list(pending):
            if tp in reached and tp not in fresh:
                pending.discard(tp)
        reached |= fresh
    if pending - reached:
        logger.warning(
            "end offsets: could not read the last batch of %s within %.0fs; using the broker's answer, which may be low",
            ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(pending - reached)),
            timeout,
        )
    return exact


async def lost_partitions(
    bootstrap: str, read: dict[TopicPartition, int], *, timeout: float = 2.0
) -> list[TopicPartition]:
    """The partitions whose log no longer holds the record at the offset given (the last one a
    stage read): the broker lost its data (Tansu keeps topics in memory; a restart empties them).

    A partition is suspect when the broker's end offset is not past that offset, and lost only if
    the record cannot be fetched either: Tansu's end offsets can be low (see `end_offsets`), and a
    fetch that returns the record settles it. A partition that neither answers nor looks short is
    not reported.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="none",
        request_timeout_ms=15000,
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    try:
        known = set(await partitions_of(consumer, sorted({tp.topic for tp in read})))
        reported = dict(await consumer.end_offsets([tp for tp in read if tp in known])) if known else {}
        suspects = {tp for tp, offset in read.items() if tp not in known or reported.get(tp, 0) <= offset}
        fetchable = sorted(tp for tp in suspects if tp in known)
        if fetchable:
            consumer.assign(fetchable)
            for tp in fetchable:
                consumer.seek(tp, read[tp])
            deadline = time.monotonic() + timeout
            waiting = set(fetchable)
            while waiting and time.monotonic() < deadline:
                batches = await consumer.getmany(*waiting, timeout_ms=200)
                for tp, records in batches.items():
                    if any(record.offset >= read[tp] for record in records):
                        waiting.discard(tp)
                        suspects.discard(tp)
        return sorted(suspects)
    finally:
        await consumer.stop()


async def message_counts(bootstrap: str, topics: Iterable[str]) -> dict[str, int]:
    """Messages per topic (sum of end offsets: topics here are never compacted or truncated)."""
    offsets = await end_offsets(bootstrap, topics)
    counts: dict[str, int] = {topic: 0 for topic in topics}
    for tp, offset in offsets.items():
        counts[tp.topic] = counts.get(tp.topic, 0) + offset
    return counts


async def committed_offsets(bootstrap: str, group: str, topics: Iterable[str]) -> dict[TopicPartition, int]:
    """Offsets a consumer group has committed on the topics' partitions (missing when none).

    Read with a consumer of the group that never subscribes nor commits: Tansu cannot answer the
    admin client's all-topics OffsetFetch (its response does not decode), but answers per partition.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, request_timeout_ms=15000
    )
    await consumer.start()
    try:
        found: dict[TopicPartition, int] = {}
        for topic in topics:
            for partition in sorted(consumer.partitions_for_topic(topic) or ()):
                tp = TopicPartition(topic, partition)
                offset = await consumer.committed(tp)
                if offset is not None and offset >= 0:
                    found[tp] = offset
        return found
    finally:
        await consumer.stop()


async def list_groups(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        return sorted(group for group, _protocol in await admin.list_consumer_groups())
    finally:
        await admin.close()
