"""With a schema registry configured, every Phoenix95 writer frames its Avro in Confluent's wire
format (magic byte 0 + schema id): the publisher, the market-data replay and every stage, so any
Confluent-compatible consumer can read every topic."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from phoenix95.connectors.kafka_admin import read_records
from phoenix95.connectors.market_data import bundled_candle_events
from phoenix95.connectors.publisher import SignalPublisher
from phoenix95.schemas.codec import Codec
from phoenix95.schemas.registry import SchemaRegistryClient
from phoenix95.settings import Settings
from phoenix95.streams.producer import EventProducer
from tests import factories
from tests.pipeline import Pipeline
from tests.registry import serve_registry

pytestmark = pytest.mark.integration


async def _raw_values(bootstrap: str, topics: list[str]) -> dict[str, list[bytes]]:
    found: dict[str, list[bytes]] = {topic: [] for topic in topics}
    async for record in read_records(bootstrap, topics):
        found[record.topic].append(record.value)
    return found


def test_with_a_schema_registry_every_topic_carries_confluent_framing(namespace, monkeypatch):
    from phoenix95.settings import get_settings

    with serve_registry() as registry_url:
        monkeypatch.setenv("P95_KAFKA__SCHEMA_REGISTRY_URL", registry_url)
        namespace.env["P95_KAFKA__SCHEMA_REGISTRY_URL"] = registry_url
        monkeypatch.setenv("P95_RISK__CLOCK", "event")
        namespace.env["P95_RISK__CLOCK"] = "event"
        get_settings.cache_clear()
        pipeline = Pipeline(namespace)
        pipeline.start()
        try:
            asyncio.run(_run(pipeline, registry_url))
        finally:
            pipeline.stop()


async def _run(pipeline: Pipeline, registry_url: str) -> None:
    settings = Settings()
    prices = bundled_candle_events("XRPUSDT", "5m", namespace=pipeline.ns.name)[:300]
    signal = factories.signal(confidence="0.95", price=prices[24].price, at=prices[24].ts_event + timedelta(seconds=1))
    codec = Codec.for_settings(settings)
    assert codec.registry is not None
    producer = EventProducer(settings.kafka.bootstrap_servers, pipeline.topics, codec)
    await producer.start()
    try:
        await producer.publish([p for p in prices if p.ts_event <= signal.ts_event])
        async with SignalPublisher.from_settings(settings) as publisher:
            await publisher.publish(signal)
        await producer.publish([p for p in prices if p.ts_event > signal.ts_event])
    finally:
        await producer.stop()

    async def opened(db) -> bool:
        return await pipeline.count(db, "SELECT COUNT(*) FROM positions WHERE signal_id = %s", (signal.signal_id,)) == 1

    await pipeline.wait_for(opened, what="the signal's position")
    topics = pipeline.topics
    names = [topics.signals, topics.market_prices, topics.analysis, topics.risk_verdicts, topics.orders]
    names.append(topics.position_ticks)
    values = await _raw_values(settings.kafka.bootstrap_servers, names)
    reader = Codec(registry=SchemaRegistryClient(registry_url))
    for topic in names:
        assert values[topic], f"nothing on {topic}"
        assert all(value[:1] == b"\x00" for value in values[topic]), f"{topic} carries another framing"
        for value in values[topic]:
            schema, _ = reader.writer_schema(value)
            assert schema.name.startswith("phoenix95.")
