"""Periodic end-offset lookups are bounded (#21): on Tansu, ListOffsets costs the broker CPU in
proportion to a partition's record batches, so a sampler lists a partition once, then learns its end
from a fetch at the end it last saw (or from its own consumer's fetches), and the broker-loss check
fetches at the offsets read. The broker's CPU itself is measured by `python -m phoenix95.bench.offsets_probe`."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from phoenix95.connectors.kafka_admin import end_offsets, ensure_topics, lost_partitions
from phoenix95.monitoring.offsets import OffsetReader

pytestmark = pytest.mark.integration


async def produce_batch(bootstrap: str, topic: str, count: int) -> None:
    """`count` messages on partition 0 in one record batch (Tansu then lists a low end offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50)
    await producer.start()
    try:
        futures = [await producer.send(topic, b"m", partition=0) for _ in range(count)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


@pytest.fixture
def topic(services, namespace) -> str:
    name = f"{namespace.name}.offsets.events"
    asyncio.run(ensure_topics(services.kafka, [name], partitions=2))
    return name


def test_a_sampler_lists_a_partition_once_then_fetches_at_its_last_end_and_stays_exact(services, topic):
    async def scenario() -> None:
        async with OffsetReader(services.kafka) as reader:
            await produce_batch(services.kafka, topic, 1)
            await produce_batch(services.kafka, topic, 6)  # the last batch holds six: listed low on Tansu
            first = await reader.read({"g": [topic]})
            assert {r.partition: r.end for r in first["g"]} == {0: 7, 1: 0}
            assert reader.lookups == {"local": 0, "fetched": 0, "listed": 2}
            await produce_batch(services.kafka, topic, 3)
            second = await reader.read({"g": [topic]})
            third = await reader.read({"g": [topic]})
            assert {r.partition: r.end for r in second["g"]} == {0: 10, 1: 0}
            assert {r.partition: r.end for r in third["g"]} == {0: 10, 1: 0}
            assert reader.lookups == {"local": 0, "fetched": 4, "listed": 2}  # never listed again
            # a worker's own consumer already knows its inputs' ends: no request at all
            reader.local_highwater = lambda tp: 10 if tp.partition == 0 else None
            await reader.read({"g": [topic]})
            assert reader.lookups == {"local": 1, "fetched": 5, "listed": 2}

    asyncio.run(scenario())


def test_on_demand_end_offsets_are_exact_after_a_many_record_batch(services, topic):
    asyncio.run(produce_batch(services.kafka, topic, 5))
    ends = asyncio.run(end_offsets(services.kafka, [topic]))
    assert ends == {TopicPartition(topic, 0): 5, TopicPartition(topic, 1): 0}  # exact (the last batch is read)


def test_the_broker_loss_check_reports_only_partitions_that_no_longer_hold_what_was_read(services, topic):
    asyncio.run(produce_batch(services.kafka, topic, 4))
    read = {TopicPartition(topic, 0): 3, TopicPartition(f"{topic}.gone", 0): 0}
    assert asyncio.run(lost_partitions(services.kafka, read)) == [TopicPartition(f"{topic}.gone", 0)]
    # a log shorter than what was read (the broker restarted empty and got a little new data)
    assert asyncio.run(lost_partitions(services.kafka, {TopicPartition(topic, 0): 9})) == [TopicPartition(topic, 0)]
