"""The simulated live feed's generator: geometric Brownian motion in Decimal, reproducible with a seed."""

from __future__ import annotations

import itertools
import math
import statistics
from decimal import Decimal

import pytest

from phoenix95.connectors.simulated_feed import GbmWalk, bundled_last_price, run_feed, tick_size_of


def path(seed: int | None, steps: int = 50, symbol: str = "BTCUSDT") -> list[Decimal]:
    walk = GbmWalk(symbol, Decimal("64000"), volatility=0.8, seed=seed)
    return [walk.step(1.0) for _ in range(steps)]


def test_same_seed_same_path_and_another_seed_another():
    assert path(7) == path(7)
    assert path(7) != path(8)


def test_prices_are_positive_decimals_on_the_symbol_tick_grid():
    prices = [*path(3, steps=200), GbmWalk("XRPUSDT", Decimal("1.0713"), seed=1).step(60.0)]
    assert all(isinstance(p, Decimal) and p > 0 for p in prices)
    assert all(p % Decimal("0.1") == 0 for p in prices[:-1])
    assert prices[-1] % Decimal("0.0001") == 0
    assert tick_size_of("FOOUSDT", Decimal("12.345")) == Decimal("0.001")


def test_log_returns_have_the_volatility_asked_for():
    walk = GbmWalk("ETHUSDT", Decimal("4600"), volatility=0.8, seed=11)
    dt = 3600.0  # hourly steps: sigma * sqrt(dt / year)
    prices = [float(walk.step(dt)) for _ in range(4000)]
    returns = [math.log(b / a) for a, b in itertools.pairwise(prices)]
    expected = 0.8 * math.sqrt(dt / (365 * 24 * 3600))
    assert statistics.stdev(returns) == pytest.approx(expected, rel=0.1)


def test_a_non_positive_start_price_is_refused():
    with pytest.raises(ValueError, match="positive"):
        GbmWalk("XRPUSDT", Decimal("0"))


def test_xrp_starts_from_its_last_bundled_candle():
    price = bundled_last_price("XRPUSDT")
    assert price is not None and price > 0
    assert bundled_last_price("NOSUCHUSDT") is None


async def test_run_feed_publishes_one_price_per_symbol_per_round_with_wall_clock_times():
    batches: list[list] = []

    async def publish(events: list) -> None:
        batches.append(events)

    walks = [GbmWalk("XRPUSDT", Decimal("1.07"), seed=1), GbmWalk("BTCUSDT", Decimal("64000"), seed=1)]
    stats = await run_feed(walks, publish, interval_s=0.01, limit=3, namespace="t")
    assert stats.published == 6 and len(batches) == 3
    assert [e.symbol for e in batches[0]] == ["XRPUSDT", "BTCUSDT"]
    assert batches[0][0].price == Decimal("1.0700") and batches[0][0].source == "simulated"
    assert batches[0][0].ts_event <= batches[2][0].ts_event
    assert len({e.event_id for batch in batches for e in batch}) == 6
