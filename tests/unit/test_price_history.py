"""The per-symbol price history the execution and position stages search by time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from phoenix95.domain.execution import MarketTick, PriceHistory, next_price_at_or_after, prices_after

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _tick(second: int) -> MarketTick:
    return MarketTick("BTCUSDT", T0 + timedelta(seconds=second), Decimal(60000 + second))


@given(
    seconds=st.lists(st.integers(min_value=0, max_value=400), max_size=120),
    probe=st.integers(min_value=-5, max_value=405),
    maxlen=st.integers(min_value=1, max_value=60),
)
def test_searching_the_history_by_time_finds_what_a_scan_of_the_kept_ticks_finds(seconds, probe, maxlen):
    history = PriceHistory(maxlen)
    kept: list[MarketTick] = []
    for second in seconds:
        tick = _tick(second)
        if history.append(tick):
            kept.append(tick)
    at = T0 + timedelta(seconds=probe)
    window = list(history)
    assert window == kept[len(kept) - len(window) :]  # the newest ones, in order
    assert maxlen <= len(window) or len(window) == len(kept)
    assert len(window) <= maxlen + maxlen // 2
    assert history.trimmed == (len(window) < len(kept))
    assert next_price_at_or_after(history, at) == next_price_at_or_after(window, at)
    assert prices_after(history, at) == prices_after(window, at)


def test_a_tick_not_later_than_the_last_one_is_not_kept():
    history = PriceHistory(10)
    assert history.append(_tick(5)) and not history.append(_tick(5)) and not history.append(_tick(3))
    assert [t.time for t in history] == [T0 + timedelta(seconds=5)]
