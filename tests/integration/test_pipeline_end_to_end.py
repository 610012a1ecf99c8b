"""A signal published to p95.signals becomes an analysis, a verdict, an order and position ticks,
with rows in PostgreSQL, keys in Redis and points in the time-series store."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import urllib.request
from datetime import timedelta

import pytest
import redis

from phoenix95.connectors.market_data import bundled_candle_events
from phoenix95.streams.admin import message_counts
from tests import factories
from tests.pipeline import run_pipeline

pytestmark = pytest.mark.integration

MALFORMED = [
    b'{"symbol": "XRPUSDT", "action": "buy", "price": ',
    b'{"symbol": "XRPUSDT", "action": "hold", "price": "1.10"}',
    b'{"symbol": "XRPUSDT", "action": "buy", "price": "NaN"}',
    b"",
]


@pytest.fixture
def pipeline(namespace, monkeypatch):
    yield from run_pipeline(namespace, monkeypatch, clock="event")


def test_signals_flow_through_every_stage_into_every_store(pipeline, services):
    prices = bundled_candle_events("XRPUSDT", "5m", namespace=pipeline.ns.name)[:600]
    start = prices[0].ts_event
    signals = [
        factories.signal(action="buy", confidence="0.9", price=prices[24].price, at=start + timedelta(hours=2)),
        factories.signal(action="sell", confidence="0.85", price=prices[96].price, at=start + timedelta(hours=8)),
        factories.signal(action="buy", confidence="0.2", price=prices[144].price, at=start + timedelta(hours=12)),
        factories.signal(
            action="short", confidence="0.95", rsi="75", price=prices[240].price, at=start + timedelta(hours=20)
        ),
    ]
    timeline = sorted([*prices, *signals], key=lambda e: (e.ts_event, e.SCHEMA_NAME))

    async def run() -> None:
        await pipeline.publish(timeline)
        await pipeline.publish_raw(pipeline.topics.signals, MALFORMED)

        async def settled(db) -> bool:
            analysed = await pipeline.count(db, "SELECT COUNT(*) FROM signals")
            dead = await pipeline.count(db, "SELECT COUNT(*) FROM dead_letters WHERE stage = 'analysis'")
            verdicts = await pipeline.count(db, "SELECT COUNT(*) FROM risk_verdicts")
            approved = await pipeline.count(db, "SELECT COUNT(*) FROM risk_verdicts WHERE decision = 'APPROVED'")
            orders = await pipeline.count(db, "SELECT COUNT(*) FROM orders")
            positions = await pipeline.count(db, "SELECT COUNT(*) FROM positions")
            ticks = (await message_counts(services.kafka, [pipeline.topics.position_ticks]))[
                pipeline.topics.position_ticks
            ]
            return (
                analysed == len(signals)
                and dead == len(MALFORMED)
                and verdicts == len(signals)
                and orders == approved
                and positions == approved
                and ticks > positions
            )

        await pipeline.wait_for(settled, what="every signal in its final state")
        async with pipeline.database() as db:
            approved = await pipeline.count(db, "SELECT COUNT(*) FROM risk_verdicts WHERE decision = 'APPROVED'")
            rejected = await pipeline.count(db, "SELECT COUNT(*) FROM risk_verdicts WHERE decision = 'REJECTED'")
            trades = await pipeline.count(db, "SELECT COUNT(*) FROM trades")
            open_ids = {
                row[0] for row in await db.fetch("SELECT position_id::text FROM positions WHERE status = 'open'")
            }
            low_confidence = await db.fetch(
                "SELECT reasons FROM risk_verdicts WHERE signal_id = %s", (signals[2].signal_id,)
            )
            reasons = await db.fetch("SELECT DISTINCT reason FROM dead_letters")
        assert approved >= 2 and rejected >= 1
        assert trades == approved
        assert "CONFIDENCE_BELOW_MIN" in low_confidence[0][0]
        assert {r[0] for r in reasons} >= {"DECODE_ERROR", "VALIDATION_ERROR", "EMPTY_MESSAGE"}
        counts = await message_counts(
            services.kafka,
            [pipeline.topics.analysis, pipeline.topics.risk_verdicts, pipeline.topics.orders, pipeline.topics.dlq],
        )
        assert counts[pipeline.topics.analysis] == len(signals)
        assert counts[pipeline.topics.risk_verdicts] == len(signals)
        assert counts[pipeline.topics.orders] == approved
        assert counts[pipeline.topics.dlq] == len(MALFORMED)

        client = redis.Redis.from_url(services.redis)
        try:
            prefix = pipeline.ns.redis_prefix
            assert client.exists(f"{prefix}price:XRPUSDT:binance")
            assert all(client.exists(f"{prefix}analysis:{s.signal_id}") for s in signals)
            active = {m.decode() for m in client.smembers(f"{prefix}positions:active")}
            assert active == open_ids
            hashes = list(client.scan_iter(match=f"{prefix}position:*:realtime"))
            assert len(hashes) == approved
        finally:
            client.close()

        if services.influx:
            base = services.influx.rstrip("/")
            urllib.request.urlopen(base + "/internal/force_flush", timeout=10).read()
            series = {}
            query = urllib.parse.urlencode({"match[]": f'{{ns="{pipeline.ns.name}"}}'})
            with urllib.request.urlopen(f"{base}/api/v1/export?{query}", timeout=30) as response:
                for line in response:
                    item = json.loads(line)
                    series.setdefault(item["metric"]["__name__"], 0)
                    series[item["metric"]["__name__"]] += len(item["values"])
            assert series.get("s4_price_data_price") == len(prices)
            assert series.get("s4_trade_metrics_position_size", 0) > 0
            assert series.get("s4_risk_metrics_total_value", 0) > 0

    asyncio.run(run())
