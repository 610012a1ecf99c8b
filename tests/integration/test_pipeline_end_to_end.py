"""A signal published to p95.signals becomes an analysis, a verdict, an order and position ticks,
with rows in PostgreSQL, keys in Redis and points in the time-series store."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import urllib.request
from datetime import timedelta

import pytest
import redis

from phoenix95.connectors.kafka_admin import message_counts
from phoenix95.connectors.market_data import bundled_candle_events
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
    monkeypatch.setenv("P95_METRICS__SYSTEM_INTERVAL_S", "1")
    namespace.env["P95_METRICS__SYSTEM_INTERVAL_S"] = "1"
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
        # one signal followed through every table by its id (= the correlation_id of every event it caused)
        followed = signals[0].signal_id
        async with pipeline.database() as db:
            for table in ("signals", "risk_verdicts", "orders", "trades", "positions"):
                found = await pipeline.count(db, f"SELECT COUNT(*) FROM {table} WHERE signal_id = %s", (followed,))
                assert found == 1, (table, found)
            chained = await db.fetch(
                """SELECT v.analysis_id, o.verdict_id = v.verdict_id, t.order_id = o.order_id, p.trade_id = t.trade_id
                     FROM risk_verdicts v JOIN orders o USING (signal_id) JOIN trades t USING (signal_id)
                     JOIN positions p USING (signal_id) WHERE v.signal_id = %s""",
                (followed,),
            )
        assert chained and all(chained[0][1:]), chained
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
            # every worker reports its system metrics, with a TTL (the key disappears when it stops)
            for stage in ("analysis", "risk", "execution", "positions"):
                deadline = time.monotonic() + 10  # reported every second: wait for one after the work
                while True:
                    reported = json.loads(client.get(f"{prefix}metrics:{stage}") or "{}")
                    if reported.get("records_processed", 0) > 0 or time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
                assert reported.get("service") == stage and reported["records_processed"] > 0, (stage, reported)
                assert reported["memory_used_mb"] > 0 and 0 < client.ttl(f"{prefix}metrics:{stage}") <= 15
        finally:
            client.close()

        if services.influx:
            # points stamped "now" (system metrics) take a few seconds to show in VictoriaMetrics' export
            series: dict[str, int] = {}
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                series = _exported_series(services.influx, pipeline.ns.name)
                if series.get("s4_system_metrics_records_processed", 0) >= 4:
                    break
                time.sleep(1)
            assert series.get("s4_price_data_price") == len(prices)
            assert series.get("s4_trade_metrics_position_size", 0) > 0
            assert series.get("s4_risk_metrics_total_value", 0) > 0
            # a system-metrics point from every worker at least
            services_reporting = _exported_labels(services.influx, pipeline.ns.name, "s4_system_metrics_cpu_percent")
            assert services_reporting >= {"analysis", "risk", "execution", "positions"}, series

    asyncio.run(run())


def _exported_series(influx: str, namespace: str) -> dict[str, int]:
    base = influx.rstrip("/")
    urllib.request.urlopen(base + "/internal/force_flush", timeout=10).read()
    series: dict[str, int] = {}
    query = urllib.parse.urlencode({"match[]": f'{{ns="{namespace}"}}'})
    with urllib.request.urlopen(f"{base}/api/v1/export?{query}", timeout=30) as response:
        for line in response:
            item = json.loads(line)
            series[item["metric"]["__name__"]] = series.get(item["metric"]["__name__"], 0) + len(item["values"])
    return series


def _exported_labels(influx: str, namespace: str, metric: str, label: str = "service") -> set[str]:
    query = urllib.parse.urlencode({"match[]": f'{metric}{{ns="{namespace}"}}'})
    with urllib.request.urlopen(f"{influx.rstrip('/')}/api/v1/export?{query}", timeout=30) as response:
        return {json.loads(line)["metric"].get(label, "") for line in response}
