"""Faust's aiokafka driver hard-codes fetch_max_wait_ms=1500; our transport sets the configured wait
on the consumer Faust creates (the hop latency on Tansu depends on it)."""

from __future__ import annotations

import asyncio

from phoenix95.settings import Settings
from phoenix95.streams.app import create_app
from phoenix95.streams.transport import TunedApp


async def _worker_consumer_wait(app: TunedApp) -> int:
    consumer = app.consumer._thread._create_worker_consumer(app.transport)  # type: ignore[attr-defined]
    try:
        return int(consumer._fetch_max_wait_ms)
    finally:
        await consumer.stop()


def test_the_stage_consumer_uses_the_configured_fetch_wait_not_fausts_1500_ms(tmp_path, monkeypatch):
    monkeypatch.setenv("P95_KAFKA__FETCH_MAX_WAIT_MS", "7")
    settings = Settings(home=tmp_path, kafka={"bootstrap_servers": "127.0.0.1:1"})  # type: ignore[arg-type]
    app = create_app(settings, "analysis")
    assert isinstance(app, TunedApp)
    assert asyncio.run(_worker_consumer_wait(app)) == 7


def test_without_our_setting_the_consumer_keeps_fausts_wait():
    app = TunedApp("p95-test-fetch-wait", broker="kafka://127.0.0.1:1", web_enabled=False)
    assert asyncio.run(_worker_consumer_wait(app)) == 1500
