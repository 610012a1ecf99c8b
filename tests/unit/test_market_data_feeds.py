"""Market data feeds: the candle replay and the simulated GBM feed are both a `MarketDataFeed`, and
the simulation is seeded, deterministic, positive and on the tick grid."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from phoenix95.connectors.market_data import (
    CandleReplay,
    GbmFeed,
    MarketDataFeed,
    bundled_candle_events,
    bundled_candle_file,
)
from phoenix95.schemas.messages import MarketPrice
from tests import factories


def collect(feed: MarketDataFeed, limit: int | None) -> list[MarketPrice]:
    async def read() -> list[MarketPrice]:
        return [event async for event in feed.prices(limit=limit, namespace="t")]

    return asyncio.run(read())


def content(events: list[MarketPrice]) -> list[dict]:
    """What an event says, without its ingest time (the wall clock when it was built)."""
    return [e.model_dump(exclude={"ts_ingest"}) for e in events]


def gbm(**changes) -> GbmFeed:
    fields = {
        "symbol": "BTCUSDT",
        "start_price": Decimal(60000),
        "start_time": factories.T0,
        "tick_size": Decimal("0.1"),
    }
    return GbmFeed(**{**fields, **changes})


def test_the_candle_replay_and_the_gbm_feed_are_market_data_feeds():
    feeds: list[MarketDataFeed] = [CandleReplay.bundled("XRPUSDT"), gbm()]
    for feed in feeds:
        assert isinstance(feed, MarketDataFeed)
        events = collect(feed, 50)
        assert len(events) == 50
        assert {e.symbol for e in events} == {feed.symbol} and {e.source for e in events} == {feed.source}
        assert all(earlier.ts_event < later.ts_event for earlier, later in pairwise(events))
        assert all(e.price > 0 and e.low <= e.price <= e.high for e in events)
    assert [feed.source for feed in feeds] == ["candles", "simulated"]
    assert not isinstance([], MarketDataFeed)  # the check means something: a list is no feed


def test_the_candle_replay_yields_every_bundled_candle_at_its_close_time():
    replay = CandleReplay.bundled("XRPUSDT", "5m")
    events = collect(replay, None)
    assert content(events) == content(bundled_candle_events("XRPUSDT", "5m", namespace="t"))
    assert len(events) == len(replay.candles) == 1999
    assert events[0].ts_event == replay.candles[0].time + timedelta(minutes=5)
    assert events[0].price == replay.candles[0].close
    assert [t.time for t in replay.ticks()] == [e.ts_event for e in events]


def test_bundled_candles_are_found_per_symbol_shortest_interval_first():
    assert bundled_candle_file("XRPUSDT") == "XRPUSDT-5m-futures_last.csv.gz"
    assert bundled_candle_file("XRPUSDT", "1h") == "XRPUSDT-1h-futures_last.csv.gz"
    assert bundled_candle_file("BTCUSDT") is None


def test_the_gbm_feed_runs_until_its_consumer_stops_without_a_limit():
    async def first(count: int) -> list[MarketPrice]:
        taken = []
        async for event in gbm().prices(namespace="t"):
            taken.append(event)
            if len(taken) == count:
                break
        return taken

    assert content(asyncio.run(first(3000))) == content(collect(gbm(), 3000))


def test_the_gbm_feed_is_deterministic_for_a_seed_and_symbol():
    assert list(gbm().candles(500)) == list(gbm().candles(500))
    assert content(list(gbm().events(20, namespace="t"))) == content(list(gbm().events(20, namespace="t")))
    assert list(gbm(seed=96).candles(50)) != list(gbm().candles(50))
    assert [c.close for c in gbm(symbol="ETHUSDT").candles(50)] != [c.close for c in gbm().candles(50)]


@given(
    start=st.decimals(min_value=Decimal("0.00001"), max_value=Decimal("100000"), places=5),
    tick=st.sampled_from([Decimal("0.1"), Decimal("0.01"), Decimal("0.0001"), Decimal("0.00001")]),
    volatility=st.floats(min_value=0.05, max_value=5.0),
    drift=st.floats(min_value=-5.0, max_value=5.0),
    seed=st.integers(min_value=0, max_value=10**6),
    minutes=st.sampled_from([1, 5, 60]),
)
def test_gbm_candles_are_positive_on_the_tick_grid_and_on_the_time_grid(start, tick, volatility, drift, seed, minutes):
    interval = timedelta(minutes=minutes)
    feed = gbm(
        start_price=start,
        tick_size=tick,
        annual_volatility=volatility,
        annual_drift=drift,
        seed=seed,
        interval=interval,
    )
    candles = list(feed.candles(200))
    for index, candle in enumerate(candles):
        prices = (candle.open, candle.high, candle.low, candle.close)
        assert all(p > 0 and p % tick == 0 for p in prices), candle
        assert candle.low <= min(candle.open, candle.close) <= max(candle.open, candle.close) <= candle.high
        assert candle.time == factories.T0 + interval * index
    assert all(earlier.close == later.open for earlier, later in pairwise(candles))  # one continuous path
    events = list(feed.events(5))
    assert [e.ts_event for e in events] == [c.time + interval for c in candles[:5]]  # at the candle's close
    assert [e.price for e in events] == [c.close for c in candles[:5]]


def test_a_gbm_price_below_one_tick_stays_at_one_tick():
    # a start price of 0.003 on a 0.01 tick would round to 0
    candles = list(gbm(start_price=Decimal("0.003"), tick_size=Decimal("0.01"), annual_volatility=0.1).candles(10))
    assert {c.close for c in candles} == {Decimal("0.01")}
