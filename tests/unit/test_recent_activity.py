"""The risk desk's indexed recent activity answers exactly what a scan of every recent approval and
signal answers, whatever order the decisions came in."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from phoenix95.connectors.exchange.brackets import bundled_brackets
from phoenix95.domain.activity import RecentActivity
from phoenix95.domain.config import TradingConfig
from phoenix95.domain.risk import (
    MarketView,
    PortfolioView,
    RecentSignal,
    RiskReason,
    RiskRequest,
    _find_duplicate,
    evaluate,
)
from tests.factories import T0

seconds = st.integers(min_value=0, max_value=600)
recent_signals = st.lists(
    st.tuples(seconds, st.sampled_from(["BTCUSDT", "ETHUSDT"]), st.sampled_from(["long", "short"])), max_size=40
)


def _recent(index: int, at: int, symbol: str, side: str) -> RecentSignal:
    return RecentSignal(f"s{index}", symbol, side, "trend", "5m", T0 + timedelta(seconds=at))  # type: ignore[arg-type]


def _request(at: int, symbol: str = "BTCUSDT", side: str = "long", signal_id: str = "new") -> RiskRequest:
    return RiskRequest(
        signal_id,
        symbol,
        side,  # type: ignore[arg-type]
        Decimal("60000"),
        Decimal("0.9"),
        Decimal("0.9"),
        Decimal("0.9"),
        "trend",
        "5m",
        T0 + timedelta(seconds=at),
    )


@given(recent_signals, seconds, st.integers(min_value=0, max_value=120), st.sampled_from(["long", "short"]))
def test_a_duplicate_is_found_exactly_when_a_scan_finds_one(entries, at, window_s, side):
    signals = [_recent(i, t, symbol, s) for i, (t, symbol, s) in enumerate(entries)]
    activity = RecentActivity(signals=signals)
    request = _request(at, side=side)
    window = timedelta(seconds=window_s)
    found = activity.find_duplicate(request, window)
    scanned = _find_duplicate(request, signals, window)
    assert (found is None) == (scanned is None)
    if found is not None:
        assert found.symbol == request.symbol and found.side == request.side
        assert abs(found.time - request.signal_time) <= window


@given(st.lists(seconds, max_size=60), seconds, seconds)
def test_approvals_counted_since_a_time_match_a_scan_after_trimming(times, start, trim_before):
    stamps = [T0 + timedelta(seconds=t) for t in times]
    activity = RecentActivity(approvals=stamps)
    cut = T0 + timedelta(seconds=trim_before)
    activity.trim(cut, cut)
    kept = [t for t in stamps if t >= cut]
    since = T0 + timedelta(seconds=start)
    assert activity.approvals_since(since) == sum(1 for t in kept if t > since)


def test_a_signal_does_not_count_as_its_own_duplicate():
    activity = RecentActivity(signals=[_recent(0, 10, "BTCUSDT", "long")])
    assert activity.find_duplicate(_request(10, signal_id="s0"), timedelta(seconds=60)) is None


def test_evaluate_gives_the_same_verdict_with_the_index_as_with_the_tuples():
    config = TradingConfig(max_orders_per_minute=2)
    approvals = (T0 + timedelta(seconds=5), T0 + timedelta(seconds=20))
    signals = (_recent(0, 15, "BTCUSDT", "long"),)
    request = _request(30)
    common = {"market": MarketView(), "config": config, "brackets": bundled_brackets(), "now": request.signal_time}
    scanned = evaluate(
        request,
        portfolio=PortfolioView(equity=Decimal(10000), recent_approvals=approvals, recent_signals=signals),
        **common,
    )
    indexed = evaluate(
        request,
        portfolio=PortfolioView(equity=Decimal(10000), activity=RecentActivity(approvals, signals)),
        **common,
    )
    assert scanned == indexed
    assert RiskReason.SUBMIT_RATE_EXCEEDED in scanned.reasons and RiskReason.DUPLICATE_SIGNAL in scanned.reasons
