"""The ceiling: raw produce and consume rates of the broker with aiokafka and confluent-kafka."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from phoenix95.connectors.kafka_admin import delete_topics, ensure_topics

PAYLOAD = b"x" * 268


async def aiokafka_rates(bootstrap: str, messages: int) -> dict[str, float]:
    topic = "bench-raw-" + uuid.uuid4().hex[:8]
    await ensure_topics(bootstrap, [topic], partitions=4)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20)
    await producer.start()
    try:
        started = time.perf_counter()
        futures = [await producer.send(topic, PAYLOAD, key=str(i % 64).encode()) for i in range(messages)]
        await asyncio.gather(*futures)
        produce = messages / (time.perf_counter() - started)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=16 << 20,
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    try:
        started = time.perf_counter()
        read = 0
        while read < messages:
            batches = await consumer.getmany(timeout_ms=2000, max_records=50000)
            if not batches:
                break
            read += sum(len(records) for records in batches.values())
        consume = read / (time.perf_counter() - started)
    finally:
        await consumer.stop()
        await delete_topics(bootstrap, [topic])
    return {"produce": round(produce), "consume": round(consume)}


def confluent_rates(bootstrap: str, messages: int) -> dict[str, float] | None:
    try:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
    except ImportError:
        return None
    topic = "bench-raw-" + uuid.uuid4().hex[:8]
    asyncio.run(ensure_topics(bootstrap, [topic], partitions=4))
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": False, "acks": "all"})
    started = time.perf_counter()
    for i in range(messages):
        while True:
            try:
                producer.produce(topic, PAYLOAD, key=str(i % 64).encode())
                break
            except BufferError:
                producer.poll(0.01)
        if i % 10000 == 0:
            producer.poll(0)
    producer.flush(60)
    produce = messages / (time.perf_counter() - started)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-" + uuid.uuid4().hex[:6],
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    # assigned, not subscribed: a group join takes 10-30 s on Tansu and is not what is measured
    consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for partition in range(4)])
    read = 0
    first_read: float | None = None
    deadline = time.monotonic() + 120
    while read < messages and time.monotonic() < deadline:
        batch = consumer.consume(num_messages=10000, timeout=1.0)
        if batch and first_read is None:
            first_read = time.perf_counter()
        read += sum(1 for m in batch if m.error() is None)
    consume = read / (time.perf_counter() - first_read) if first_read else 0.0
    consumer.close()
    asyncio.run(delete_topics(bootstrap, [topic]))
    return {"produce": round(produce), "consume": round(consume)}


def run(bootstrap: str, *, quick: bool) -> dict[str, Any]:
    messages = 50_000 if quick else 300_000
    aiokafka = asyncio.run(aiokafka_rates(bootstrap, messages))
    confluent = confluent_rates(bootstrap, messages)
    return {
        "value": aiokafka["consume"],
        "unit": "msg/s",
        "baseline": {"aiokafka": aiokafka, "confluent_kafka": confluent or "confluent-kafka not installed"},
        "ratio": None,
        "messages": messages,
        "message_bytes": len(PAYLOAD),
        "note": "the broker's ceiling for clients in Python: produce and consume of raw messages, 4 partitions",
    }
