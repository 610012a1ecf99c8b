"""The live market feed against the simulator's streams: mark prices and closed 1-minute candles become
MarketPrice events; a dropped stream reconnects and backfills the missed candles by REST; duplicates
(by event time) are dropped; the age of each symbol's data is measured."""

from __future__ import annotations

import asyncio
import time

from phoenix95.connectors.binance_feed import DATA_AGE, BinanceFeed
from phoenix95.connectors.exchange.binance_rest import BinanceRest
from phoenix95.schemas.messages import MarketPrice
from tests.binance_sim import BinanceSimulator
from tests.exchange_helpers import sim_settings


async def _until(check, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def test_feed_reconnects_backfills_the_gap_and_drops_duplicates():
    async with BinanceSimulator() as sim:
        published: list[MarketPrice] = []

        async def publish(events):
            published.extend(events)

        rest = BinanceRest(sim_settings(sim.base_url).exchange)
        feed = BinanceFeed(["BTCUSDT"], ws_url=sim.ws_url, fetch=lambda m, p: rest.call(m, p), publish=publish)
        task = asyncio.create_task(feed.run())
        try:
            await asyncio.wait_for(feed.connected.wait(), 30)
            await sim.set_mark("BTCUSDT", "60010.5")
            t0 = (int(time.time() * 1000) // 60_000 - 5) * 60_000
            await sim.publish_kline("BTCUSDT", t0, "60000", "60100", "59900", "60050", "12.5")
            await sim.publish_kline("BTCUSDT", t0, "60000", "60100", "59900", "60050", "12.5")  # sent twice
            await _until(lambda: len(published) == 2 and feed.duplicates == 1)
            assert await sim.drop_websockets() == 1
            # Two candles close while the stream is down...
            sim.add_kline("BTCUSDT", t0 + 60_000, "60050", "60200", "60000", "60150", "8")
            sim.add_kline("BTCUSDT", t0 + 120_000, "60150", "60160", "59800", "59850", "9")
            await _until(lambda: feed.connects == 2 and feed.backfilled == 2)
            # ...and the stream sends the last one again after the reconnect.
            await sim.publish_kline("BTCUSDT", t0 + 120_000, "60150", "60160", "59800", "59850", "9")
            await sim.set_mark("BTCUSDT", "59840")
            await _until(lambda: len(published) == 5)
            await asyncio.sleep(0.2)
        finally:
            task.cancel()
            await rest.close()
        marks = [e for e in published if e.source == "binance-mark"]
        candles = [e for e in published if e.source == "binance-kline"]
        assert [str(m.mark_price) for m in marks] == ["60010.5", "59840"]
        assert [int(c.ts_event.timestamp() * 1000) - 1 for c in candles] == [
            t0 + 59_999,
            t0 + 119_999,
            t0 + 179_999,
        ]
        assert [str(c.price) for c in candles] == ["60050", "60150", "59850"]
        assert len({e.event_id for e in published}) == len(published) == 5
        assert feed.duplicates == 2
        assert DATA_AGE.labels("BTCUSDT")._value.get() >= 0
        assert feed.age("BTCUSDT") is not None and feed.age("BTCUSDT") < 60


async def test_the_feed_runs_as_a_worker_stage_and_publishes_to_the_prices_topic(namespace):
    import os
    import sys

    from phoenix95.connectors.kafka_admin import read_records
    from phoenix95.schemas.codec import Codec
    from phoenix95.schemas.topics import Topics
    from phoenix95.settings import get_settings

    async with BinanceSimulator() as sim:
        env = {
            **os.environ,
            **namespace.env,
            "P95_EXCHANGE__BASE_URL": sim.base_url,
            "P95_EXCHANGE__FEED_SYMBOLS": '["ETHUSDT"]',
            "P95_FEED__SOURCE": "binance",  # on paper the feed stage simulates prices
        }
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "phoenix95",
            "worker",
            "--stage",
            "feed",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await _until(lambda: len(sim._market_sockets) == 1, timeout=60)
            topic = Topics(namespace.name).market_prices
            bootstrap = get_settings().kafka.bootstrap_servers
            found: list[MarketPrice] = []
            deadline = time.monotonic() + 30
            while not found and time.monotonic() < deadline:
                await sim.set_mark("ETHUSDT", "3001.25")
                await asyncio.sleep(0.5)
                found = [
                    e
                    for e in [Codec().decode(r.value, MarketPrice) async for r in read_records(bootstrap, [topic])]
                    if e.source == "binance-mark"
                ]
            assert found and found[0].symbol == "ETHUSDT" and str(found[0].mark_price) == "3001.25"
        finally:
            worker.terminate()
            await worker.wait()
