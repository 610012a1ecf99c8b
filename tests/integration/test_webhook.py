"""The webhook and the publisher against the real broker and Redis: every request gets the right
status, and only valid, first-time alerts reach p95.signals (and the pipeline)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import uvicorn
from aiokafka import AIOKafkaConsumer

from phoenix95.connectors.kafka_admin import end_offsets, ensure_topics
from phoenix95.connectors.publisher import SignalPublisher, SyncSignalPublisher
from phoenix95.connectors.webhook import create_app
from phoenix95.schemas.codec import Codec
from phoenix95.schemas.messages import Signal
from phoenix95.settings import Settings
from phoenix95.stack import services as stack_services
from phoenix95.stack.processes import free_port, stop
from tests.pipeline import run_pipeline

pytestmark = pytest.mark.integration

SECRET = "tv-secret-for-tests-0123456789"
OTHER_SECRET = "mt5-secret-for-tests-0123456789"


def now_text(offset_s: float = 0.0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=offset_s)).strftime("%Y-%m-%dT%H:%M:%SZ")


def json_alert(**fields: Any) -> dict[str, Any]:
    return {
        "passphrase": SECRET,
        "ticker": "BINANCE:XRPUSDT.P",
        "action": "buy",
        "close": "1.19",
        "interval": "5",
        "timenow": now_text(),
        "confidence": "0.9",
        **fields,
    }


def settings_with(**webhook: Any) -> Settings:
    settings = Settings()  # from the environment the namespace fixture exported
    options = {"secrets": {"tradingview": SECRET, "mt5": OTHER_SECRET}, **webhook}
    return settings.model_copy(update={"webhook": settings.webhook.model_validate(options)})


@asynccontextmanager
async def serving(settings: Settings, **app_options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app on a real uvicorn server (no proxy-header handling, as `p95 serve` runs it)."""
    await ensure_topics(settings.kafka.bootstrap_servers, [_topic(settings)], partitions=settings.kafka.partitions)
    port = free_port()
    config = uvicorn.Config(
        create_app(settings, **app_options), host="127.0.0.1", port=port, proxy_headers=False, log_level="warning"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        server.should_exit = True
        await task


def _topic(settings: Settings) -> str:
    return f"{settings.namespace}.p95.signals"


async def signals_on_topic(settings: Settings) -> list[tuple[bytes | None, Signal]]:
    """Every message on the signals topic, decoded (key, signal)."""
    topic = _topic(settings)
    ends = {tp: end for tp, end in (await end_offsets(settings.kafka.bootstrap_servers, [topic])).items() if end}
    if not ends:
        return []
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    found: list[tuple[bytes | None, Signal]] = []
    try:
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        codec = Codec()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            positions = [await consumer.position(tp) for tp in ends]
            if all(position >= end for position, end in zip(positions, ends.values(), strict=True)):
                break
            for records in (await consumer.getmany(timeout_ms=200)).values():
                found.extend((r.key, codec.decode(r.value, Signal)) for r in records)
    finally:
        await consumer.stop()
    return found


async def post(client: httpx.AsyncClient, body: dict[str, Any] | str | bytes, **headers: str) -> httpx.Response:
    if isinstance(body, dict):
        return await client.post("/webhook/signal", json=body, headers=headers)
    content_type = headers.pop("content_type", "text/plain; charset=utf-8")
    return await client.post("/webhook/signal", content=body, headers={"content-type": content_type, **headers})


# -- end to end ----------------------------------------------------------------------------------------


@pytest.fixture
def pipeline(namespace):
    yield from run_pipeline(namespace)


async def test_json_and_text_alerts_are_published_once_each_and_processed_by_the_pipeline(pipeline):
    settings = settings_with()
    text_alert = f"passphrase={SECRET}\nticker=BINANCE:ETHUSDT.P\naction=sell\nclose=3000.5\ntimenow={now_text()}"
    alert = json_alert()
    async with serving(settings) as client:
        first_json = await post(client, alert)
        first_text = await post(client, text_alert)
        again_json = await post(client, alert)
        again_text = await post(client, text_alert)
    assert first_json.status_code == 200 and first_json.json()["status"] == "published"
    assert first_text.status_code == 200 and first_text.json()["status"] == "published"
    assert again_json.json() == {"status": "duplicate", "signal_id": first_json.json()["signal_id"]}
    assert again_text.json() == {"status": "duplicate", "signal_id": first_text.json()["signal_id"]}
    ids = {first_json.json()["signal_id"], first_text.json()["signal_id"]}

    on_topic = await signals_on_topic(settings)
    assert {signal.signal_id for _, signal in on_topic} == ids
    assert len(on_topic) == len(ids)
    by_id = {signal.signal_id: (key, signal) for key, signal in on_topic}
    key, text_signal = by_id[first_text.json()["signal_id"]]
    assert key == b"ETHUSDT" and text_signal.action == "sell" and str(text_signal.price) == "3000.5"
    assert text_signal.source == "tradingview" and text_signal.producer == "webhook"
    assert SECRET not in (text_signal.raw or "")

    async def processed(db) -> bool:
        rows = await db.fetch("SELECT COUNT(*) FROM risk_verdicts WHERE signal_id = ANY(%s)", (list(ids),))
        return int(rows[0][0]) == len(ids)

    await pipeline.wait_for(processed, what="a risk verdict for every webhook signal")
    async with pipeline.database() as db:
        stored = await db.fetch("SELECT signal_id, symbol FROM signals WHERE signal_id = ANY(%s)", (list(ids),))
    assert {row[0] for row in stored} == ids


# -- what must not get through ---------------------------------------------------------------------------


async def test_wrong_or_missing_secrets_get_401_and_publish_nothing(namespace):
    settings = settings_with()
    async with serving(settings) as client:
        wrong = await post(client, json_alert(passphrase="not-the-secret"))
        missing = await post(client, {k: v for k, v in json_alert().items() if k != "passphrase"})
        wrong_header = await post(client, "ticker=XRPUSDT\naction=buy\nprice=1.19", **{"x-p95-secret": "nope"})
        text_without = await post(client, "ticker=XRPUSDT\naction=buy\nprice=1.19")
    assert [r.status_code for r in (wrong, missing, wrong_header, text_without)] == [401, 401, 401, 401]
    assert wrong.json()["status"] == "unauthorized"
    assert await signals_on_topic(settings) == []


async def test_a_header_secret_authenticates_and_names_the_source(namespace):
    settings = settings_with()
    async with serving(settings) as client:
        by_header = await post(client, "ticker=XRPUSDT\naction=buy\nprice=1.19", **{"x-p95-secret": OTHER_SECRET})
        by_bearer = await post(client, "ticker=XRPUSDT\naction=sell\nprice=1.2", authorization=f"Bearer {SECRET}")
    assert by_header.status_code == 200 and by_bearer.status_code == 200
    sources = {signal.signal_id: signal.source for _, signal in await signals_on_topic(settings)}
    assert sources == {by_header.json()["signal_id"]: "mt5", by_bearer.json()["signal_id"]: "tradingview"}


async def test_a_replayed_alert_publishes_once(namespace):
    settings = settings_with(replay_window_s=60)
    alert = json_alert(signal_id="tv-order-1")
    async with serving(settings) as client:
        first = await post(client, alert)
        same_payload = await post(client, dict(reversed(list(alert.items()))))  # same content, other key order
        same_id = await post(client, alert | {"close": "1.25"})  # same signal_id, other content
        other = await post(client, json_alert(close="1.21"))
    assert first.json()["status"] == "published"
    assert same_payload.json() == {"status": "duplicate", "signal_id": "tv-order-1"}
    assert same_id.json() == {"status": "duplicate", "signal_id": "tv-order-1"}
    assert other.json()["status"] == "published"
    ids = sorted(signal.signal_id for _, signal in await signals_on_topic(settings))
    assert ids == sorted(["tv-order-1", other.json()["signal_id"]])


async def test_stale_and_far_future_alerts_are_rejected_by_their_own_timestamp(namespace):
    settings = settings_with(max_alert_age_s=60)
    async with serving(settings) as client:
        stale = await post(client, json_alert(timenow=now_text(-120)))
        future = await post(client, json_alert(timenow=now_text(+3600)))
        fresh = await post(client, json_alert(timenow=now_text(-30)))
    assert stale.status_code == 422 and stale.json()["status"] == "stale"
    assert stale.json()["errors"][0]["field"] == "source_timestamp"
    assert future.status_code == 422
    assert fresh.status_code == 200
    assert [s.signal_id for _, s in await signals_on_topic(settings)] == [fresh.json()["signal_id"]]


async def test_an_oversized_body_gets_413(namespace):
    settings = settings_with(max_body_bytes=1024)
    padded = json_alert(strategy="x" * 2000)
    async with serving(settings) as client:
        declared = await post(client, padded)

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit applies while reading
            yield json.dumps(padded).encode()

        streamed = await client.post("/webhook/signal", content=chunks(), headers={"content-type": "application/json"})
    assert declared.status_code == 413 and streamed.status_code == 413
    assert await signals_on_topic(settings) == []


async def test_malformed_bodies_get_400_or_422_naming_the_field(namespace):
    settings = settings_with()
    async with serving(settings) as client:
        truncated = await post(client, f'{{"passphrase": "{SECRET}", "ticker": "XRPUSDT", "price": ')
        free_text = await post(client, "buy XRPUSDT at market")
        bad_action = await post(client, json_alert(action="hold"))
        bad_price = await post(client, json_alert(close="-5"))
        placeholder = await post(client, json_alert(close="{{close}}"))
        unknown = await post(client, json_alert(pirce="1.19"))
    assert truncated.status_code == 400 and truncated.json()["errors"][0]["field"] == "body"
    assert free_text.status_code == 400
    # fields are named as the alert message spells them (`close`, an alias of `price`)
    for response, field in ((bad_action, "action"), (bad_price, "close"), (placeholder, "close"), (unknown, "pirce")):
        assert response.status_code == 422, response.text
        assert [e["field"] for e in response.json()["errors"]] == [field]
    assert await signals_on_topic(settings) == []


async def test_a_burst_over_the_rate_limit_gets_429_with_retry_after(namespace):
    settings = settings_with(rate_limit_per_minute=5)
    if time.time() % 60 > 55:  # keep the burst inside one rate-limit minute
        await asyncio.sleep(61 - time.time() % 60)
    async with serving(settings) as client:
        answers = await asyncio.gather(*(post(client, json_alert(close=f"1.{10 + i}")) for i in range(9)))
        invalid_after = await post(client, json_alert(action="hold"))
        other_source = await post(client, json_alert(passphrase=OTHER_SECRET, close="2.5"))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] * 5 + [429] * 4
    limited = [r for r in answers if r.status_code == 429]
    assert all(1 <= int(r.headers["retry-after"]) <= 60 for r in limited)
    assert invalid_after.status_code == 429  # invalid alerts count too
    assert other_source.status_code == 200  # the limit is per source
    assert len(await signals_on_topic(settings)) == 6


async def test_allowlist_believes_forwarded_for_only_from_trusted_proxies(namespace):
    tradingview = {"x-forwarded-for": "52.89.214.238"}
    async with serving(settings_with(allow_ips=["tradingview"], trusted_proxies=["127.0.0.1"])) as client:
        via_proxy = await post(client, json_alert(), **tradingview)
        direct = await post(client, json_alert(close="1.3"))
        forged = await post(client, json_alert(close="1.4"), **{"x-forwarded-for": "52.89.214.238, 198.51.100.7"})
    async with serving(settings_with(allow_ips=["tradingview"])) as client:
        untrusted_peer = await post(client, json_alert(close="1.5"), **tradingview)
    assert via_proxy.status_code == 200
    assert [direct.status_code, forged.status_code, untrusted_peer.status_code] == [403, 403, 403]


async def test_health_metrics_and_openapi(namespace):
    async with serving(settings_with()) as client:
        await post(client, json_alert())
        await post(client, json_alert(passphrase="wrong"))
        health = await client.get("/health")
        metrics = (await client.get("/metrics")).text
        openapi = (await client.get("/openapi.json")).json()
    assert health.status_code == 200 and health.json() == {"status": "ok", "broker": True, "redis": True}
    assert 'p95_webhook_requests_total{outcome="published",source="tradingview"} 1.0' in metrics
    assert 'p95_webhook_requests_total{outcome="unauthorized",source="-"} 1.0' in metrics
    assert "p95_webhook_ack_seconds_bucket" in metrics
    content = openapi["paths"]["/webhook/signal"]["post"]["requestBody"]["content"]
    assert set(content) == {"application/json", "text/plain"}


async def test_an_unconfirmed_write_gets_503_and_frees_the_alert_for_a_retry(namespace, tmp_path: Path):
    broker = await asyncio.to_thread(stack_services.start_broker, tmp_path, 0)  # a broker of its own, to stop
    try:
        settings = settings_with(publish_timeout_s=1.0)
        settings = settings.model_copy(
            update={"kafka": settings.kafka.model_copy(update={"bootstrap_servers": broker.url})}
        )
        alert = json_alert(signal_id="unconfirmed-1")
        async with serving(settings) as client:
            assert (await client.get("/health")).json()["broker"] is True
            await asyncio.to_thread(stop, broker.pid, expect=broker.expect, timeout=0.2)  # as if it crashed
            answer = await post(client, alert)
            health = await client.get("/health")
    finally:
        await asyncio.to_thread(stop, broker.pid, expect=broker.expect)
    assert answer.status_code == 503 and answer.json()["status"] == "unavailable"
    assert health.status_code == 503 and health.json()["broker"] is False
    client_redis = redis.Redis.from_url(settings.redis_url())
    try:
        assert not list(client_redis.scan_iter(match=f"{settings.redis.prefix}webhook:seen:*"))
    finally:
        client_redis.close()


# -- the Python API -----------------------------------------------------------------------------------------


async def test_publisher_confirms_writes_keyed_by_symbol(namespace):
    settings = Settings()
    await ensure_topics(settings.kafka.bootstrap_servers, [_topic(settings)], partitions=settings.kafka.partitions)
    async with SignalPublisher.from_settings(settings) as publisher:
        one = await publisher.publish({"ticker": "BINANCE:BTCUSDT.P", "action": "buy", "price": "65000"})
        many = await publisher.publish_many(
            [
                {"symbol": "BTCUSDT", "action": "sell", "price": "65100"},
                {"symbol": "ETHUSDT", "action": "buy", "price": "3000"},
            ]
        )
    with SyncSignalPublisher(settings.kafka.bootstrap_servers, namespace=settings.namespace) as sync_publisher:
        sync = sync_publisher.publish({"symbol": "ETHUSDT", "action": "sell", "price": "3010", "signal_id": "sync-1"})
    assert one.partition == many[0].partition  # same symbol, same partition
    assert sync.signal_id == "sync-1" and sync.partition == many[1].partition
    on_topic = await signals_on_topic(settings)
    assert sorted((key, s.signal_id) for key, s in on_topic) == sorted(
        [
            (b"BTCUSDT", one.signal_id),
            (b"BTCUSDT", many[0].signal_id),
            (b"ETHUSDT", many[1].signal_id),
            (b"ETHUSDT", "sync-1"),
        ]
    )
