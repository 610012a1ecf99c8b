"""The floor a latency scenario is measured against: the pipeline's hops relayed by bare aiokafka
consumers and producers that do no work (#23 item 4).

Four relays (signals -> analysis -> verdicts -> orders -> position ticks), each one consumer (no
group: assigned every partition, the stages' `fetch_max_wait_ms`) and one producer (acks=all, the
stages' linger), forwarding each record's bytes and key to the next topic and awaiting the broker's
acknowledgement, as a stage does. Signals are published at the scenario's rate with prices beside
them at its price interval (load on the broker, not relayed). Latency: from a signal's publish time
to the broker timestamp of its copy on the verdicts topic (two hops, signal -> verdict) and on the
ticks topic (four hops, signal -> position opened).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from phoenix95.bench.pipeline import _percentiles

HOPS = ("signals", "analysis", "verdicts", "orders", "ticks")


async def _relay(bootstrap: str, source: str, target: str, partitions: int, fetch_max_wait_ms: int) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=fetch_max_wait_ms
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=1)
    await consumer.start()
    await producer.start()
    try:
        tps = [TopicPartition(source, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            futures = [
                await producer.send(target, record.value, key=record.key)
                for records in batches.values()
                for record in records
            ]
            if futures:
                await asyncio.gather(*futures)
    finally:
        await consumer.stop()
        await producer.stop()


async def measure(
    bootstrap: str,
    *,
    rate: float,
    seconds: float,
    price_interval: float,
    symbols: int = 10,
    partitions: int = 4,
    fetch_max_wait_ms: int = 10,
) -> dict[str, Any]:
    from phoenix95.connectors.kafka_admin import delete_topics, ensure_topics, read_records

    namespace = "relay" + uuid.uuid4().hex[:6]
    names = {hop: f"{namespace}.{hop}" for hop in (*HOPS, "prices")}
    await ensure_topics(bootstrap, list(names.values()), partitions=partitions)
    relays = [
        asyncio.create_task(_relay(bootstrap, names[a], names[b], partitions, fetch_max_wait_ms))
        for a, b in itertools.pairwise(HOPS)
    ]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=1)
    await producer.start()
    keys = [f"SYM{i}USDT".encode() for i in range(symbols)]
    sent: dict[str, float] = {}
    try:
        # warm up: one signal through the four relays
        await producer.send_and_wait(names["signals"], json.dumps({"id": "warm-up"}).encode(), key=keys[0])
        deadline = time.monotonic() + 60
        while not await _arrived(bootstrap, names["ticks"]):
            if time.monotonic() > deadline:
                raise TimeoutError("the relays did not forward a warm-up message within 60 s")
            await asyncio.sleep(0.2)
        started = time.perf_counter()
        interval = 1.0 / rate
        next_signal = next_price = started
        count = 0
        while time.perf_counter() - started < seconds:
            now = time.perf_counter()
            if now >= next_price:
                stamp = json.dumps({"price": time.time()}).encode()
                for key in keys:
                    await producer.send(names["prices"], stamp, key=key)
                next_price += price_interval
            while now >= next_signal:
                signal_id = f"s{count}"
                sent[signal_id] = time.time()
                value = json.dumps({"id": signal_id, "padding": "x" * 300}).encode()
                await producer.send(names["signals"], value, key=keys[count % len(keys)])
                count += 1
                next_signal += interval
            await asyncio.sleep(min(0.002, max(0.0, min(next_signal, next_price) - time.perf_counter())))
        await producer.flush()
        await asyncio.sleep(3.0)
    finally:
        await producer.stop()
        for task in relays:
            task.cancel()
        await asyncio.gather(*relays, return_exceptions=True)
    arrived: dict[str, dict[str, float]] = {"verdicts": {}, "ticks": {}}
    for hop in arrived:
        async for record in read_records(bootstrap, [names[hop]]):
            signal_id = json.loads(record.value).get("id")
            if signal_id in sent:
                arrived[hop][signal_id] = record.timestamp / 1000
    await delete_topics(bootstrap, list(names.values()))

    def latencies(hop: str) -> list[float]:
        return [arrived[hop][k] - t if k in arrived[hop] else float("inf") for k, t in sent.items()]

    return {
        "signal_to_verdict_ms": _percentiles(latencies("verdicts")),
        "signal_to_position_opened_ms": _percentiles(latencies("ticks")),
        "signals": len(sent),
        "hops": f"4 bare aiokafka relays (no work), fetch_max_wait_ms {fetch_max_wait_ms}, linger 1 ms, acks=all",
    }


async def _arrived(bootstrap: str, topic: str) -> bool:
    from phoenix95.connectors.kafka_admin import message_counts

    return (await message_counts(bootstrap, [topic]))[topic] > 0
