"""Replay sources against the real broker and PostgreSQL: a time range of the signals topic (read
from the offset the time search finds, stopped past the range), the signals table, and market
prices from the prices topic. Each gives the digest of the same signals and prices from files."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from phoenix95.agents.ports import SignalAnalyzed
from phoenix95.connectors.kafka_admin import ensure_topics
from phoenix95.connectors.market_data import read_candles, tick_event
from phoenix95.replay import runner, sources
from phoenix95.schemas.codec import Codec
from phoenix95.schemas.convert import analyze
from phoenix95.schemas.messages import Signal
from phoenix95.schemas.topics import Topics
from phoenix95.storage.postgres import Database, migrate
from phoenix95.storage.tables import writes_for
from phoenix95.streams.producer import EventProducer
from tests.integration.test_replay import replay, replay_cli

pytestmark = pytest.mark.integration

#: The recorded signals: the first 80 of the bundled sample, with ids of their own.
RECORDED = 80
#: The range replayed: from the time of the 20th recorded signal to the time of the 50th (excluded).
FIRST, STOP = 20, 50
PARTITIONS = 3


def recorded_lines() -> list[dict[str, Any]]:
    lines = runner.sample_signals_path().read_text().splitlines()[:RECORDED]
    return [{**json.loads(line), "signal_id": f"recorded-{index:03d}"} for index, line in enumerate(lines)]


def signals_file(directory: Path, lines: list[dict[str, Any]], name: str = "signals.jsonl") -> Path:
    path = directory / name
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def recorded_signals(directory: Path) -> list[Signal]:
    signals, bad = sources.read_signals_file(signals_file(directory, recorded_lines(), "recorded.jsonl"))
    assert not bad and len(signals) == RECORDED
    return signals


def iso(moment: datetime) -> str:
    return moment.isoformat()


def reference(directory: Path, first: int, stop: int, *args: str) -> dict[str, Any]:
    """The replay of recorded signals [first, stop) from a file."""
    return replay_cli("--signals", str(signals_file(directory, recorded_lines()[first:stop])), *args)


async def publish_with_event_timestamps(bootstrap: str, topic: str, signals: list[Signal]) -> list[tuple[int, int]]:
    """Each signal as a record stamped with its event time, round-robin over the partitions, in
    four produce batches; (partition, offset) of each."""
    codec = Codec()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, enable_idempotence=False)
    await producer.start()
    placed: list[tuple[int, int]] = []
    try:
        quarter = len(signals) // 4 + 1
        for batch in range(4):
            sends = [
                await producer.send(
                    topic,
                    codec.encode(signal),
                    key=signal.symbol.encode(),
                    partition=index % PARTITIONS,
                    headers=[codec.schema_header(signal)],
                    timestamp_ms=int(signal.ts_event.timestamp() * 1000),
                )
                for index, signal in enumerate(signals)
                if index // quarter == batch
            ]
            placed.extend((m.partition, m.offset) for m in await asyncio.gather(*sends))
    finally:
        await producer.stop()
    return placed


def test_a_topic_time_range_replays_only_its_signals_reading_from_the_offset_the_time_search_finds(
    namespace, services, tmp_path
):
    recorded = recorded_signals(tmp_path)
    topic = Topics(namespace.name).signals
    asyncio.run(ensure_topics(services.kafka, [topic], partitions=PARTITIONS))
    placed = asyncio.run(publish_with_event_timestamps(services.kafka, topic, recorded))
    start, until = recorded[FIRST].ts_event, recorded[STOP].ts_event

    summary = replay_cli("--signals-topic", topic, "--from", iso(start), "--until", iso(until))

    expected = reference(tmp_path, FIRST, STOP)
    assert summary["signals"] == STOP - FIRST
    assert summary["digest"] == expected["digest"]
    assert (summary["orders"], summary["trades"], summary["pnl"]) == (
        expected["orders"],
        expected["trades"],
        expected["pnl"],
    )
    read = summary["sources"]["signals"]
    assert read["kind"] == "topic" and read["topic"] == topic
    # every partition started at its first record of the range (the broker's own answer, by append
    # time, is offset 0) and stopped at its first record past it
    offsets = {p: [o for (pp, o), _ in zip(placed, recorded, strict=True) if pp == p] for p in range(PARTITIONS)}
    indexes = {p: [i for i, (pp, _) in enumerate(placed) if pp == p] for p in range(PARTITIONS)}
    expected_starts = {str(p): offsets[p][next(k for k, i in enumerate(indexes[p]) if i >= FIRST)] for p in offsets}
    assert read["start_offsets"] == expected_starts
    assert all(offset > 0 for offset in expected_starts.values())
    in_range = {p: sum(1 for i in indexes[p] if FIRST <= i < STOP) for p in offsets}
    assert read["records_read_by_partition"] == {str(p): in_range[p] + 1 for p in offsets}  # + the one past
    assert read["records_read"] == STOP - FIRST + PARTITIONS < RECORDED


def test_a_topic_range_ending_after_the_last_record_reads_each_partition_to_its_end(namespace, services, tmp_path):
    recorded = recorded_signals(tmp_path)
    topic = Topics(namespace.name).signals
    asyncio.run(ensure_topics(services.kafka, [topic], partitions=PARTITIONS))
    asyncio.run(publish_with_event_timestamps(services.kafka, topic, recorded))
    start = recorded[FIRST].ts_event

    summary = replay_cli("--signals-topic", topic, "--from", iso(start), "--until", iso(start + timedelta(days=30)))

    assert summary["signals"] == RECORDED - FIRST
    assert summary["digest"] == reference(tmp_path, FIRST, RECORDED)["digest"]
    assert summary["sources"]["signals"]["records_read"] == RECORDED - FIRST


def test_the_signals_table_replays_like_the_file_its_signals_came_from(namespace, services, tmp_path):
    recorded = recorded_signals(tmp_path)

    async def record() -> None:
        await migrate(services.postgres, namespace.schema)
        async with Database(services.postgres, schema=namespace.schema) as db:
            groups = [writes_for(SignalAnalyzed(signal, analyze(signal))) for signal in recorded]
            assert await db.write(groups) == []

    asyncio.run(record())

    everything = replay_cli("--signals-table")
    assert everything["sources"]["signals"] == {"kind": "table", "schema": namespace.schema, "table": "signals"}
    assert everything["signals"] == RECORDED
    assert everything["digest"] == reference(tmp_path, 0, RECORDED)["digest"]

    start, until = recorded[FIRST].ts_event, recorded[STOP].ts_event
    ranged = replay_cli("--signals-table", "--from", iso(start), "--until", iso(until))
    assert ranged["signals"] == STOP - FIRST
    assert ranged["digest"] == reference(tmp_path, FIRST, STOP)["digest"]


def test_prices_from_the_market_prices_topic_give_the_results_of_the_candle_file(namespace, services, tmp_path):
    topics = Topics(namespace.name)
    ticks = sources.read_price_file(runner.DEFAULT_PRICES)

    async def publish() -> None:
        await ensure_topics(services.kafka, [topics.market_prices], partitions=PARTITIONS)
        producer = EventProducer(services.kafka, topics, Codec())
        await producer.start()
        try:
            for chunk in range(0, len(ticks), 500):  # several produce batches
                await producer.publish([tick_event(t, namespace=namespace.name) for t in ticks[chunk : chunk + 500]])
        finally:
            await producer.stop()

    asyncio.run(publish())

    from_file = replay()
    from_topic = replay("--prices-topic", topics.market_prices)
    assert from_topic["prices"] == len(ticks) == 1999
    assert [p["kind"] for p in from_topic["sources"]["prices"]] == ["topic"]
    assert from_topic["digest"] == from_file["digest"]
    assert (from_topic["trades"], from_topic["pnl"]) == (from_file["trades"], from_file["pnl"])

    # A range: the prices of the topic in it (the records were written now, their events in 2021).
    start, until = ticks[300].time, ticks[900].time
    ranged = replay("--prices-topic", topics.market_prices, "--from", iso(start), "--until", iso(until))
    assert ranged["prices"] == 600
    assert ranged["sources"]["prices"][0]["records_read"] < len(ticks)
    candles = [c for c in read_candles(runner.DEFAULT_PRICES) if start <= c.time + timedelta(minutes=5) < until]
    trimmed = tmp_path / "XRPUSDT-5m-range.csv"
    trimmed.write_text(
        "date,open,high,low,close,volume\n"
        + "".join(f"{c.time.isoformat()},{c.open},{c.high},{c.low},{c.close},{c.volume}\n" for c in candles)
    )
    expected = replay("--prices", str(trimmed), "--from", iso(start), "--until", iso(until))
    assert expected["prices"] == 600
    assert ranged["digest"] == expected["digest"]
    assert ranged["signals"] == expected["signals"] > 0
