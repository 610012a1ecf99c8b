"""Hundreds of malformed messages interleaved with valid ones, on every stage's input topic: no stage
crashes or stalls, every bad one lands in the dead-letter topic and table with its reason, every valid
one reaches its final state. Then a dead letter is replayed after a fix."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import timedelta

import pytest
from typer.testing import CliRunner

from phoenix95.cli.main import app
from phoenix95.connectors.kafka_admin import message_counts
from phoenix95.connectors.market_data import bundled_candle_events
from phoenix95.schemas.codec import Codec
from tests import factories
from tests.pipeline import Pipeline
from tests.unit.samples import samples

pytestmark = pytest.mark.integration


def bad_signals(codec: Codec) -> list[tuple[bytes, str]]:
    """(value, expected reason) for p95.signals."""
    valid_avro = codec.encode(factories.signal())
    analysis = codec.encode(samples()[1])
    good = {"symbol": "XRPUSDT", "action": "buy", "price": "1.1"}
    cases: list[tuple[bytes, str]] = [
        (b"", "EMPTY_MESSAGE"),
        (valid_avro[:12], "DECODE_ERROR"),
        (valid_avro[: len(valid_avro) // 2], "DECODE_ERROR"),
        (analysis, "SCHEMA_MISMATCH"),
        (valid_avro + b"\x00\x00\x00", "SCHEMA_MISMATCH"),
        (b'{"symbol": "XRPUSDT", "action": "buy"', "DECODE_ERROR"),
        (b'{"symbol": "\xff\xfe", "action": "buy", "price": "1"}', "DECODE_ERROR"),
        (json.dumps({"action": "buy", "price": "1"}).encode(), "VALIDATION_ERROR"),
        (json.dumps({**good, "extra": True}).encode(), "VALIDATION_ERROR"),
        (json.dumps({**good, "price": "one"}).encode(), "VALIDATION_ERROR"),
        (json.dumps({**good, "price": "NaN"}).encode(), "VALIDATION_ERROR"),
        (json.dumps({**good, "price": "Infinity"}).encode(), "VALIDATION_ERROR"),
        (json.dumps({**good, "price": "-3"}).encode(), "VALIDATION_ERROR"),
        (json.dumps({**good, "price": "1e30"}).encode(), "VALIDATION_ERROR"),  # beyond NUMERIC(20, 8)
        (json.dumps({**good, "action": "hodl"}).encode(), "VALIDATION_ERROR"),
        (json.dumps({**good, "strategy": "x" * 100_000}).encode(), "VALIDATION_ERROR"),
        (json.dumps({**good, "symbol": "NOTASYMBOLUSDT"}).encode(), "UNKNOWN_SYMBOL"),
        (b"\x07\x00binary", "DECODE_ERROR"),
    ]
    return cases


def test_bad_input_is_dead_lettered_while_valid_signals_flow(namespace, monkeypatch, services):
    monkeypatch.setenv("P95_RISK__CLOCK", "event")
    namespace.env["P95_RISK__CLOCK"] = "event"
    pipeline = Pipeline(namespace)
    pipeline.start()
    try:
        expected_reasons = asyncio.run(_run(pipeline, services))
        _replay_a_dead_letter(pipeline, expected_reasons)
    finally:
        pipeline.stop()


async def _run(pipeline: Pipeline, services) -> dict[str, int]:
    codec = Codec()
    rng = random.Random(95)
    prices = bundled_candle_events("XRPUSDT", "5m", namespace=pipeline.ns.name)[:400]
    start = prices[0].ts_event
    valid = [
        factories.signal(
            price=prices[min(i * 2, 399)].price,
            confidence=str(rng.choice(["0.2", "0.5", "0.9"])),
            action=rng.choice(["buy", "sell"]),
            at=start + timedelta(minutes=10 * i),
        )
        for i in range(200)
    ]
    timeline = sorted([*prices, *valid], key=lambda e: (e.ts_event, e.SCHEMA_NAME))
    cases = bad_signals(codec)
    bad_signal_values = [cases[i % len(cases)] for i in range(340)]
    # bad messages on the other stages' inputs
    other = {
        pipeline.topics.analysis: [b"", b"{}", codec.encode(valid[0])],
        pipeline.topics.risk_verdicts: [b"\x00\x00", codec.encode(samples()[0])],
        pipeline.topics.orders: [b"junk", codec.encode(samples()[2])],
        pipeline.topics.market_prices: [b"", b"\xc3\x01short"],
    }
    expected_other = sum(len(v) for v in other.values())
    # interleave: valid events in chunks, bad messages between them
    chunk = max(1, len(timeline) // 20)
    for index in range(0, len(timeline), chunk):
        await pipeline.publish(timeline[index : index + chunk])
        batch = bad_signal_values[index // chunk * 17 : index // chunk * 17 + 17]
        if batch:
            await pipeline.publish_raw(pipeline.topics.signals, [value for value, _ in batch])
    for topic, values in other.items():
        await pipeline.publish_raw(topic, values)
    # null keys: bad ones are dead-lettered like any other, a valid JSON one is processed
    null_keyed = [cases[i] for i in (0, 1, 7, 13, 15)]
    await pipeline.publish_raw(pipeline.topics.signals, [value for value, _ in null_keyed], key=None)
    bad_signal_values = [*bad_signal_values, *null_keyed]
    unkeyed = {"symbol": "XRPUSDT", "action": "buy", "price": str(prices[50].price), "confidence": "0.2"}
    unkeyed["source_timestamp"] = (start + timedelta(minutes=250)).isoformat()
    await pipeline.publish_raw(pipeline.topics.signals, [json.dumps(unkeyed).encode()], key=None)
    # an exact re-delivery of a signal changes nothing; a different publication of a used id is DUPLICATE
    await pipeline.publish([valid[6]])
    reused = factories.signal(signal_id=valid[5].signal_id, price=valid[5].price, at=valid[5].ts_event)
    await pipeline.publish([reused])
    bad_signal_values.append((codec.encode(reused), "DUPLICATE"))
    valid_count = len(valid) + 1
    total_bad = len(bad_signal_values) + expected_other

    async def settled(db) -> bool:
        verdicts = await pipeline.count(db, "SELECT COUNT(*) FROM risk_verdicts")
        dead = await pipeline.count(db, "SELECT COUNT(*) FROM dead_letters")
        approved = await pipeline.count(db, "SELECT COUNT(*) FROM risk_verdicts WHERE decision = 'APPROVED'")
        orders = await pipeline.count(db, "SELECT COUNT(*) FROM orders")
        filled = await pipeline.count(db, "SELECT COUNT(*) FROM orders WHERE status = 'filled' AND intent = 'open'")
        positions = await pipeline.count(db, "SELECT COUNT(*) FROM positions")
        return verdicts == valid_count and dead == total_bad and orders == approved and positions == filled

    await pipeline.wait_for(settled, timeout=180, what="all valid signals decided and all bad ones dead-lettered")
    async with pipeline.database() as db:
        by_reason = dict(
            await db.fetch("SELECT reason, COUNT(*) FROM dead_letters WHERE stage = 'analysis' GROUP BY reason")
        )
        by_stage = dict(await db.fetch("SELECT stage, COUNT(*) FROM dead_letters GROUP BY stage"))
        analysed = await pipeline.count(db, "SELECT COUNT(*) FROM signals")
        approved = await pipeline.count(db, "SELECT COUNT(*) FROM risk_verdicts WHERE decision = 'APPROVED'")
        filled = await pipeline.count(db, "SELECT COUNT(*) FROM orders WHERE status = 'filled' AND intent = 'open'")
        positions = await pipeline.count(db, "SELECT COUNT(*) FROM positions")
        originals = await db.fetch(
            "SELECT original_value FROM dead_letters WHERE stage = 'analysis' ORDER BY source_partition, source_offset"
        )
    expected_reasons: dict[str, int] = {}
    for _, reason in bad_signal_values:
        expected_reasons[reason] = expected_reasons.get(reason, 0) + 1
    print(
        f"\nbad input: {len(bad_signal_values)} bad signals + {expected_other} bad messages on other topics, "
        f"{valid_count} valid signals; dead letters by stage {by_stage}, analysis reasons {by_reason}; "
        f"{approved} approved, {positions} positions"
    )
    assert by_reason == expected_reasons
    assert by_stage == {"analysis": len(bad_signal_values), "risk": 3, "execution": 2, "positions": 4}
    assert analysed == valid_count
    assert approved > 0 and positions == filled
    # the original bytes of every bad one (the DUPLICATE's bytes carry its own ingest time: compare ids)
    kept = sorted(bytes(row[0]) for row in originals)
    sent = [value for value, reason in bad_signal_values if reason != "DUPLICATE"]
    assert len(kept) == len(sent) + 1 and all(value in kept for value in sent)
    counts = await message_counts(services.kafka, [pipeline.topics.dlq])
    assert counts[pipeline.topics.dlq] == total_bad
    async with pipeline.database() as db:
        verdicts_of_reused = await pipeline.count(
            db, "SELECT COUNT(*) FROM risk_verdicts WHERE signal_id = %s", (valid[5].signal_id,)
        )
        verdicts_of_redelivered = await pipeline.count(
            db, "SELECT COUNT(*) FROM risk_verdicts WHERE signal_id = %s", (valid[6].signal_id,)
        )
    assert verdicts_of_reused == 1 and verdicts_of_redelivered == 1
    for stage in pipeline.workers.stages:
        assert pipeline.workers.alive(stage), f"{stage} worker died"
    return expected_reasons


def _replay_a_dead_letter(pipeline: Pipeline, expected_reasons: dict[str, int]) -> None:
    # A dead letter replayed after a fix: list it, replay the unknown-action ones, see them come back.
    runner = CliRunner()
    listed = runner.invoke(app, ["dlq", "list", "--reason", "UNKNOWN_SYMBOL", "--json", "--limit", "1000"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert len(rows) == expected_reasons["UNKNOWN_SYMBOL"]
    # filters: by stage, by time
    by_stage = json.loads(runner.invoke(app, ["dlq", "list", "--stage", "risk", "--json", "--limit", "1000"]).stdout)
    assert len(by_stage) == 3 and {row["stage"] for row in by_stage} == {"risk"}
    future = json.loads(runner.invoke(app, ["dlq", "list", "--since", "2100-01-01T00:00:00Z", "--json"]).stdout)
    assert future == []
    recent = runner.invoke(app, ["dlq", "list", "--since", "2000-01-01T00:00:00Z", "--json", "--limit", "10000"])
    assert len(json.loads(recent.stdout)) == sum(expected_reasons.values()) + 9
    replayed = runner.invoke(app, ["dlq", "replay", "--id", rows[0]["id"]])
    assert replayed.exit_code == 0, replayed.output
    # replay by reason: the DUPLICATE publication comes back as a DUPLICATE again
    again = runner.invoke(app, ["dlq", "replay", "--reason", "DUPLICATE", "--stage", "analysis"])
    assert again.exit_code == 0, again.output

    async def replay_dead_lettered_again(db) -> bool:
        count = await pipeline.count(db, "SELECT COUNT(*) FROM dead_letters WHERE reason = 'UNKNOWN_SYMBOL'")
        marked = await pipeline.count(db, "SELECT COUNT(*) FROM dead_letters WHERE replay_count = 1")
        duplicates = await pipeline.count(db, "SELECT COUNT(*) FROM dead_letters WHERE reason = 'DUPLICATE'")
        return count == expected_reasons["UNKNOWN_SYMBOL"] + 1 and marked == 2 and duplicates == 2

    asyncio.run(pipeline.wait_for(replay_dead_lettered_again, what="the replayed original processed again"))
