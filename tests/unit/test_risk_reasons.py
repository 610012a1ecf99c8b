"""Every reason code of a risk verdict appears when, and only when, its rule is broken.

Each test starts from a signal the default configuration approves (BTCUSDT long at 60,000, final
confidence 0.8: Kelly 0.6 x 0.2 = 12 % of the 10,000 USDT equity as margin, 0.4 BTC = 24,000 USDT at
20x), breaks one rule just past its limit (the verdict then carries exactly that reason) and stays
just inside it (the verdict is approved).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from phoenix95.connectors.exchange.brackets import bundled_brackets
from phoenix95.domain.activity import RecentActivity
from phoenix95.domain.brackets import Bracket, BracketTable
from phoenix95.domain.config import TradingConfig
from phoenix95.domain.risk import (
    ALL_SYMBOLS,
    Exposure,
    MarketView,
    PortfolioView,
    RecentSignal,
    RiskReason,
    RiskRequest,
    SymbolLock,
    Verdict,
    evaluate,
)
from phoenix95.domain.trading_state import TradingState
from tests import factories

NOW = factories.T0 + timedelta(seconds=1)
EQUITY = Decimal(10000)
BUNDLED = bundled_brackets()


def decide(
    request: RiskRequest | None = None,
    *,
    state: TradingState = TradingState.ACTIVE,
    exposures: tuple[Exposure, ...] = (),
    approvals: tuple[datetime, ...] = (),
    recent: tuple[RecentSignal, ...] = (),
    activity: RecentActivity | None = None,
    lag_seconds: float = 0.0,
    max_lag_seconds: float | None = None,
    config: TradingConfig | None = None,
    brackets: BracketTable = BUNDLED,
    now: datetime = NOW,
    locks: dict[str, SymbolLock] | None = None,
    last_price: Decimal | None = None,
) -> Verdict:
    portfolio = PortfolioView(
        locks=locks or {},
        equity=EQUITY,
        trading_state=state,
        exposures=exposures,
        recent_approvals=approvals,
        recent_signals=recent,
        pipeline_lag_seconds=lag_seconds,
        activity=activity,
    )
    return evaluate(
        request or factories.risk_request(),
        portfolio=portfolio,
        market=MarketView(last_price=last_price),
        config=config or TradingConfig(),
        brackets=brackets,
        now=now,
        max_pipeline_lag_seconds=max_lag_seconds,
    )


def rejected_for(verdict: Verdict, *reasons: RiskReason) -> bool:
    """Rejected with exactly these reasons, each explained by a detail line."""
    explained = {detail.split(":", 1)[0] for detail in verdict.details}
    return not verdict.approved and verdict.reasons == reasons and explained == {r.value for r in reasons}


def test_the_baseline_signal_is_approved_with_its_plan():
    verdict = decide()
    assert verdict.approved and verdict.reasons == () and verdict.intent == "open"
    plan = verdict.plan
    assert plan is not None
    assert plan.quantity == Decimal("0.4")
    assert plan.notional == Decimal(24000) and plan.initial_margin == Decimal(1200)
    assert plan.kelly == Decimal("0.6") and plan.position_fraction == Decimal("0.12")
    assert (plan.stop_loss_price, plan.take_profit_price) == (Decimal("58800.0"), Decimal("61200.0"))
    # (1200 - 0.4 x 60000) / (0.4 x 0.004 - 0.4), bracket 1 of BTCUSDT (MMR 0.4 %, cum 0)
    assert plan.liquidation_price == Decimal("57228.91566265")


# -- the signal ------------------------------------------------------------------------------------------


def test_risk_rejects_a_symbol_outside_the_allowed_symbols():
    only_eth = TradingConfig(allowed_symbols=frozenset({"ETHUSDT"}))
    assert rejected_for(decide(config=only_eth), RiskReason.SYMBOL_NOT_ALLOWED)
    assert decide(config=TradingConfig(allowed_symbols=frozenset({"ETHUSDT", "BTCUSDT"}))).approved


def test_risk_rejects_a_symbol_it_knows_nothing_about_without_a_plan():
    verdict = decide(factories.risk_request(symbol="FOOUSDT"))
    assert rejected_for(verdict, RiskReason.SYMBOL_NOT_ALLOWED)
    assert verdict.plan is None


@pytest.mark.parametrize(("confidence", "rejected"), [("0.2499", True), ("0.25", False), ("0.9", False)])
def test_risk_rejects_when_confidence_is_below_the_minimum(confidence, rejected):
    verdict = decide(factories.risk_request(confidence=confidence))
    assert rejected_for(verdict, RiskReason.CONFIDENCE_BELOW_MIN) if rejected else verdict.approved


@pytest.mark.parametrize(("score", "rejected"), [("0.4499", True), ("0.45", False), ("1", False)])
def test_risk_rejects_when_the_phoenix95_score_is_below_the_threshold(score, rejected):
    verdict = decide(factories.risk_request(phoenix95_score=score))
    assert rejected_for(verdict, RiskReason.SCORE_BELOW_THRESHOLD) if rejected else verdict.approved


@pytest.mark.parametrize(("age", "rejected"), [(timedelta(minutes=5, seconds=1), True), (timedelta(minutes=5), False)])
def test_risk_rejects_a_signal_older_than_the_maximum_age_as_stale(age, rejected):
    verdict = decide(now=factories.T0 + age)
    assert rejected_for(verdict, RiskReason.SIGNAL_STALE) if rejected else verdict.approved


@pytest.mark.parametrize(
    ("lag_seconds", "max_lag_seconds", "rejected"),
    [(30.5, 30.0, True), (30.0, 30.0, False), (1000.0, None, False)],
)
def test_risk_rejects_new_signals_as_stale_while_the_pipeline_lags(lag_seconds, max_lag_seconds, rejected):
    verdict = decide(lag_seconds=lag_seconds, max_lag_seconds=max_lag_seconds)
    assert rejected_for(verdict, RiskReason.SIGNAL_STALE) if rejected else verdict.approved


def test_a_stale_signal_in_a_lagging_pipeline_is_stale_once_with_both_explanations():
    verdict = decide(now=factories.T0 + timedelta(minutes=6), lag_seconds=31, max_lag_seconds=30)
    assert verdict.reasons == (RiskReason.SIGNAL_STALE,)
    assert len(verdict.details) == 2
    assert "signal is 360s old" in verdict.details[0] and "pipeline lag 31.0s" in verdict.details[1]


def _duplicates(request: RiskRequest) -> dict[str, tuple[RecentSignal, bool]]:
    return {
        "same signal 60s before": (factories.recent_signal(request, seconds_before=60), True),
        "same signal 60s after": (factories.recent_signal(request, seconds_before=-60), True),
        "61s before": (factories.recent_signal(request, seconds_before=61), False),
        "other side": (factories.recent_signal(request, side="short"), False),
        "other strategy": (factories.recent_signal(request, strategy="other"), False),
        "other timeframe": (factories.recent_signal(request, timeframe="1h"), False),
        "other symbol": (factories.recent_signal(request, symbol="ETHUSDT"), False),
        "its own earlier delivery": (factories.recent_signal(request, signal_id=request.signal_id), False),
    }


@pytest.mark.parametrize("case", list(_duplicates(factories.risk_request())))
@pytest.mark.parametrize("view", ["tuples", "activity index"])
def test_risk_rejects_the_same_signal_twice_within_the_window_as_a_duplicate(case, view):
    request = factories.risk_request()
    other, duplicate = _duplicates(request)[case]
    if view == "tuples":
        verdict = decide(request, recent=(other,))
    else:
        verdict = decide(request, activity=RecentActivity(signals=[other]))
    assert rejected_for(verdict, RiskReason.DUPLICATE_SIGNAL) if duplicate else verdict.approved


# -- trading state ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("open_opposite", [False, True])
def test_risk_rejects_everything_while_trading_is_halted(open_opposite):
    exposures = (factories.exposure(symbol="BTCUSDT", side="short", notional="6000", margin="300"),)
    verdict = decide(state=TradingState.HALTED, exposures=exposures if open_opposite else ())
    assert rejected_for(verdict, RiskReason.TRADING_HALTED)
    assert verdict.trading_state is TradingState.HALTED and verdict.intent == "open"


@pytest.mark.parametrize(
    "exposures",
    [
        pytest.param((), id="nothing open"),
        pytest.param((factories.exposure(symbol="BTCUSDT", side="long"),), id="same side open"),
        pytest.param((factories.exposure(symbol="BTCUSDT", side="short", pending=True),), id="opposite only pending"),
        pytest.param((factories.exposure(symbol="ETHUSDT", side="short"),), id="opposite on another symbol"),
    ],
)
def test_risk_rejects_a_signal_that_reduces_nothing_while_trading_is_reducing(exposures):
    verdict = decide(state=TradingState.REDUCING, exposures=exposures)
    assert rejected_for(verdict, RiskReason.TRADING_REDUCING)
    assert verdict.trading_state is TradingState.REDUCING


def test_while_reducing_a_signal_against_an_open_position_is_approved_to_close_the_oldest():
    newer = factories.exposure(symbol="BTCUSDT", side="short", opened_at=factories.T0 - timedelta(minutes=5))
    older = factories.exposure(symbol="BTCUSDT", side="short", opened_at=factories.T0 - timedelta(hours=2))
    verdict = decide(state=TradingState.REDUCING, exposures=(newer, older, factories.exposure(symbol="BTCUSDT")))
    assert verdict.approved and verdict.reasons == ()
    assert verdict.intent == "close" and verdict.close_reference_id == older.reference_id
    assert verdict.plan is None  # nothing is opened: the execution stage closes the position's quantity
    assert verdict.details == (f"REDUCING: closes short position {older.reference_id}",)


def test_while_reducing_a_closing_signal_that_breaks_another_rule_is_rejected_for_that_rule_only():
    opposite = factories.exposure(symbol="BTCUSDT", side="short")
    verdict = decide(factories.risk_request(confidence="0.1"), state=TradingState.REDUCING, exposures=(opposite,))
    assert rejected_for(verdict, RiskReason.CONFIDENCE_BELOW_MIN)


# -- limits ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pending", [False, True])
@pytest.mark.parametrize(("count", "rejected"), [(10, True), (9, False)])
def test_risk_rejects_when_the_maximum_of_open_positions_is_reached(count, rejected, pending):
    exposures = tuple(factories.exposure(symbol="ETHUSDT", pending=pending) for _ in range(count))
    verdict = decide(exposures=exposures)
    assert rejected_for(verdict, RiskReason.MAX_OPEN_POSITIONS) if rejected else verdict.approved


@pytest.mark.parametrize(("limit", "rejected"), [("23999.99", True), ("24000", False)])
def test_risk_rejects_an_order_whose_notional_exceeds_the_maximum_per_order(limit, rejected):
    verdict = decide(config=TradingConfig(max_notional_per_order=Decimal(limit)))
    assert rejected_for(verdict, RiskReason.NOTIONAL_EXCEEDS_MAX_PER_ORDER) if rejected else verdict.approved


@pytest.mark.parametrize(
    ("symbol", "notional", "pending", "rejected"),
    [
        ("BTCUSDT", "6000.01", False, True),
        ("BTCUSDT", "6000.01", True, True),
        ("BTCUSDT", "6000", False, False),
        ("ETHUSDT", "6000.01", False, False),
    ],
)
def test_risk_rejects_when_the_exposure_on_the_symbol_would_exceed_its_maximum(symbol, notional, pending, rejected):
    # limit 30,000: 24,000 of the new order + what is already open (or pending) on BTCUSDT
    config = TradingConfig(max_exposure_per_symbol=Decimal(30000))
    held = factories.exposure(symbol=symbol, notional=notional, margin="300", pending=pending)
    verdict = decide(config=config, exposures=(held,))
    assert rejected_for(verdict, RiskReason.EXPOSURE_EXCEEDS_MAX_PER_SYMBOL) if rejected else verdict.approved


def _approvals(count: int, *, newest: datetime, step: timedelta) -> tuple[datetime, ...]:
    return tuple(newest - step * index for index in range(count))


@pytest.mark.parametrize("view", ["tuples", "activity index"])
@pytest.mark.parametrize(
    ("approvals", "rejected"),
    [
        pytest.param(_approvals(60, newest=NOW, step=timedelta(milliseconds=900)), True, id="60 in the last minute"),
        pytest.param(_approvals(59, newest=NOW, step=timedelta(milliseconds=900)), False, id="59 in the last minute"),
        pytest.param(
            _approvals(60, newest=NOW - timedelta(minutes=1), step=timedelta(seconds=1)), False, id="60 a minute ago"
        ),
    ],
)
def test_risk_rejects_when_the_submit_rate_per_minute_is_exceeded(approvals, rejected, view):
    activity = RecentActivity(approvals=approvals)
    verdict = decide(approvals=approvals) if view == "tuples" else decide(activity=activity)
    assert rejected_for(verdict, RiskReason.SUBMIT_RATE_EXCEEDED) if rejected else verdict.approved


@pytest.mark.parametrize(("used", "rejected"), [("8790.41", True), ("8790.40", False)])
def test_risk_rejects_when_the_margin_and_entry_fee_exceed_the_free_margin(used, rejected):
    # needs 1,200 margin + 9.60 entry fee (0.04 % of 24,000): free margin = 10,000 - used
    verdict = decide(exposures=(factories.exposure(symbol="ETHUSDT", margin=used, notional="100000"),))
    assert rejected_for(verdict, RiskReason.INSUFFICIENT_MARGIN) if rejected else verdict.approved


def _one_bracket(max_leverage: int) -> BracketTable:
    return BracketTable(
        {"BTCUSDT": [Bracket(1, max_leverage, Decimal(0), Decimal(10**9), Decimal("0.004"), Decimal(0))]}
    )


@pytest.mark.parametrize(("bracket_leverage", "rejected"), [(19, True), (20, False)])
def test_risk_rejects_a_leverage_above_the_brackets_initial_leverage(bracket_leverage, rejected):
    verdict = decide(brackets=_one_bracket(bracket_leverage))
    assert rejected_for(verdict, RiskReason.LEVERAGE_EXCEEDS_BRACKET) if rejected else verdict.approved
    assert verdict.plan is not None and verdict.plan.bracket_max_leverage == bracket_leverage


@pytest.mark.parametrize(
    ("final_confidence", "reason"),
    [
        pytest.param("0.3", RiskReason.POSITION_SIZE_ZERO, id="negative Kelly"),
        pytest.param("0.5", RiskReason.POSITION_SIZE_ZERO, id="zero Kelly at even odds"),
        pytest.param("0.501", RiskReason.BELOW_EXCHANGE_MINIMUM, id="0.001 BTC: 60 USDT below the 100 USDT minimum"),
        pytest.param("0.502", None, id="0.002 BTC: 120 USDT"),
    ],
)
def test_risk_rejects_a_position_that_sizes_to_zero_or_below_the_exchange_minimum(final_confidence, reason):
    verdict = decide(factories.risk_request(final_confidence=final_confidence))
    assert rejected_for(verdict, reason) if reason is not None else verdict.approved


@pytest.mark.parametrize("side", ["long", "short"])
@pytest.mark.parametrize(("buffer", "rejected"), [("0.10", True), ("0.04", False)])
def test_risk_rejects_a_position_that_would_be_liquidated_before_its_stop(side, buffer, rejected):
    # At 40x, 0.8 BTC on 1,200 margin liquidates 1,265.06 (long) / 1,254.98 (short) from entry: inside
    # the 1,200 stop distance plus a 10 % buffer (1,320), outside it plus 4 % (1,248).
    config = TradingConfig(leverage=40, liquidation_buffer=Decimal(buffer))
    verdict = decide(factories.risk_request(side=side), config=config)
    assert rejected_for(verdict, RiskReason.LIQUIDATION_BEFORE_STOP) if rejected else verdict.approved
    assert verdict.plan is not None and verdict.plan.notional == Decimal(48000)


# -- several rules at once -------------------------------------------------------------------------------


def test_a_verdict_breaking_many_rules_lists_every_one_of_them():
    request = factories.risk_request(confidence="0.2", phoenix95_score="0.26")
    now = factories.T0 + timedelta(minutes=10)
    config = TradingConfig(
        allowed_symbols=frozenset({"ETHUSDT"}),
        leverage=40,
        max_notional_per_order=Decimal(40000),
        max_exposure_per_symbol=Decimal(30000),
        price_collar_bps=Decimal(100),
    )
    verdict = decide(
        request,
        state=TradingState.HALTED,
        exposures=tuple(factories.exposure(symbol="BTCUSDT", notional="1000", margin="950") for _ in range(10)),
        approvals=_approvals(60, newest=now, step=timedelta(milliseconds=500)),
        recent=(factories.recent_signal(request, seconds_before=10),),
        lag_seconds=45,
        max_lag_seconds=30,
        config=config,
        brackets=_one_bracket(30),
        now=now,
        locks={
            "BTCUSDT": SymbolLock("BTCUSDT", RiskReason.STOPLOSS_GUARD, now + timedelta(minutes=1)),
            ALL_SYMBOLS: SymbolLock(ALL_SYMBOLS, RiskReason.COOLDOWN, now + timedelta(minutes=1)),
        },
        last_price=Decimal(50000),
    )
    assert not verdict.approved
    assert set(verdict.reasons) == set(RiskReason) - {
        RiskReason.TRADING_REDUCING,
        RiskReason.POSITION_SIZE_ZERO,
        RiskReason.BELOW_EXCHANGE_MINIMUM,
    }
    assert len(verdict.reasons) == len(set(verdict.reasons))
    assert len(verdict.details) == len(verdict.reasons) + 1  # SIGNAL_STALE twice: age and lag


def test_a_signal_without_an_edge_while_reducing_lists_each_broken_rule():
    verdict = decide(
        factories.risk_request(confidence="0.1", phoenix95_score="0.13", final_confidence="0.13"),
        state=TradingState.REDUCING,
    )
    assert rejected_for(
        verdict,
        RiskReason.CONFIDENCE_BELOW_MIN,
        RiskReason.SCORE_BELOW_THRESHOLD,
        RiskReason.TRADING_REDUCING,
        RiskReason.POSITION_SIZE_ZERO,
    )
