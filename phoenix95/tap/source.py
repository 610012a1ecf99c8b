"""Reading records from assigned partitions, without a consumer group and without commits.

Two implementations behind one small synchronous interface:

* `ConfluentSource` (confluent-kafka, when installed): librdkafka fetches and parses in its own
  threads, so this process spends its time decoding and printing — the fast path;
* `AiokafkaSource` (aiokafka, always installed): the fallback; its event loop runs in a background
  thread so it keeps fetching while the caller decodes.

Both use manual assignment: no JoinGroup, no offset commit. (librdkafka insists on a `group.id`
even so: it gets a throw-away one that is never joined nor committed to.)
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Mapping
from typing import Any, Literal, Protocol

from phoenix95.tap.decode import RawRecord

logger = logging.getLogger(__name__)

Client = Literal["auto", "confluent", "aiokafka"]
#: (topic, partition)
Partition = tuple[str, int]


class Source(Protocol):
    name: str

    def poll(self, max_records: int, timeout: float) -> list[RawRecord]:
        """Up to `max_records` records of the assigned partitions (fewer after `timeout` seconds)."""
        ...

    def pause(self, partitions: list[Partition]) -> None:
        """Stop fetching these partitions (their stop offset is reached)."""
        ...

    def position(self, partition: Partition) -> int | None:
        """The offset of the next record to be read from the partition (None when unknown)."""
        ...

    def close(self) -> None: ...


def confluent_available() -> bool:
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        return False
    return True


def open_source(bootstrap: str, starts: Mapping[Partition, int], *, client: Client = "auto") -> Source:
    """A source reading each partition from its start offset."""
    if client == "confluent" or (client == "auto" and confluent_available()):
        return ConfluentSource(bootstrap, starts)
    return AiokafkaSource(bootstrap, starts)


class ConfluentSource:
    name = "confluent-kafka"

    def __init__(self, bootstrap: str, starts: Mapping[Partition, int]):
        from confluent_kafka import Consumer, TopicPartition

        self._topic_partition = TopicPartition
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"p95-tap-unjoined-{uuid.uuid4().hex[:12]}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": False,
                "fetch.wait.max.ms": 100,
                "fetch.max.bytes": 64 * 1024 * 1024,
                "max.partition.fetch.bytes": 8 * 1024 * 1024,
                "queued.max.messages.kbytes": 256 * 1024,
                "client.id": "p95-tap",
                "logger": logger,
            }
        )
        self._consumer.assign(
            [TopicPartition(topic, partition, offset) for (topic, partition), offset in starts.items()]
        )

    def poll(self, max_records: int, timeout: float) -> list[RawRecord]:
        messages = self._consumer.consume(max_records, timeout)
        records: list[RawRecord] = []
        append = records.append
        for message in messages:
            if message.error() is not None:
                logger.warning("fetch error on %s[%s]: %s", message.topic(), message.partition(), message.error())
                continue
            append(
                (  # type: ignore[arg-type]  # confluent-kafka's stubs: topic/partition/offset are set on a fetched message
                    message.topic(),
                    message.partition(),
                    message.offset(),
                    message.timestamp()[1],
                    message.key(),
                    message.headers() or [],
                    message.value(),
                )
            )
        return records

    def pause(self, partitions: list[Partition]) -> None:
        if partitions:
            self._consumer.pause([self._topic_partition(topic, partition) for topic, partition in partitions])

    def position(self, partition: Partition) -> int | None:
        found = self._consumer.position([self._topic_partition(*partition)])
        offset = found[0].offset if found else -1
        return offset if offset >= 0 else None

    def close(self) -> None:
        self._consumer.close()


class AiokafkaSource:
    name = "aiokafka"

    def __init__(self, bootstrap: str, starts: Mapping[Partition, int]):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="p95-tap-aiokafka", daemon=True)
        self._thread.start()
        self._consumer: Any = self._call(self._start(bootstrap, dict(starts)))

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _start(self, bootstrap: str, starts: dict[Partition, int]) -> Any:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            client_id="p95-tap",
            fetch_max_wait_ms=100,
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            request_timeout_ms=30000,
        )
        await consumer.start()
        consumer.assign([TopicPartition(topic, partition) for topic, partition in starts])
        for (topic, partition), offset in starts.items():
            consumer.seek(TopicPartition(topic, partition), offset)
        return consumer

    def poll(self, max_records: int, timeout: float) -> list[RawRecord]:
        return list(self._call(self._poll(max_records, timeout)))

    async def _poll(self, max_records: int, timeout: float) -> list[RawRecord]:
        batches = await self._consumer.getmany(timeout_ms=int(timeout * 1000), max_records=max_records)
        records: list[RawRecord] = []
        for tp, messages in batches.items():
            topic, partition = tp.topic, tp.partition
            records.extend((topic, partition, m.offset, m.timestamp, m.key, m.headers, m.value) for m in messages)
        return records

    def pause(self, partitions: list[Partition]) -> None:
        if partitions:
            from aiokafka import TopicPartition

            tps = [TopicPartition(topic, partition) for topic, partition in partitions]
            self._loop.call_soon_threadsafe(lambda: self._consumer.pause(*tps))

    def position(self, partition: Partition) -> int | None:
        from aiokafka import TopicPartition

        try:
            return int(self._call(self._consumer.position(TopicPartition(*partition))))
        except Exception:  # not yet known (e.g. the seek is still pending)
            return None

    def close(self) -> None:
        try:
            self._call(self._consumer.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()
