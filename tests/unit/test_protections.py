"""The compliance protections, pure: the risk stage's new reason codes (a locked symbol, the price
collar) and the book monitor's trips (daily loss, drawdown, stop-loss streaks, cooldown)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from phoenix95.connectors.exchange.brackets import bundled_brackets
from phoenix95.domain.config import TradingConfig
from phoenix95.domain.protections import BookMonitor, ProtectionConfig
from phoenix95.domain.risk import ALL_SYMBOLS, MarketView, PortfolioView, RiskReason, SymbolLock, Verdict, evaluate
from tests import factories

NOW = factories.T0 + timedelta(seconds=1)


def decide(*, locks=None, last_price=None, config=None) -> Verdict:
    return evaluate(
        factories.risk_request(),  # BTCUSDT long at 60,000
        portfolio=PortfolioView(equity=Decimal(10000), locks=locks or {}),
        market=MarketView(last_price=last_price),
        config=config or TradingConfig(),
        brackets=bundled_brackets(),
        now=NOW,
    )


def test_risk_rejects_a_symbol_the_stoploss_guard_locked_until_the_lock_ends():
    lock = SymbolLock("BTCUSDT", RiskReason.STOPLOSS_GUARD, NOW + timedelta(minutes=1), "5 stop-losses")
    verdict = decide(locks={"BTCUSDT": lock})
    assert verdict.reasons == (RiskReason.STOPLOSS_GUARD,) and "5 stop-losses" in verdict.details[0]
    assert decide(locks={"BTCUSDT": SymbolLock("BTCUSDT", RiskReason.STOPLOSS_GUARD, NOW)}).approved  # expired
    assert decide(locks={"ETHUSDT": lock}).approved  # another symbol's lock


def test_risk_rejects_every_symbol_under_a_lock_on_all_symbols_and_a_symbol_in_its_cooldown():
    all_locked = SymbolLock(ALL_SYMBOLS, RiskReason.STOPLOSS_GUARD, NOW + timedelta(hours=1))
    assert decide(locks={ALL_SYMBOLS: all_locked}).reasons == (RiskReason.STOPLOSS_GUARD,)
    cooling = SymbolLock("BTCUSDT", RiskReason.COOLDOWN, NOW + timedelta(minutes=5))
    assert decide(locks={"BTCUSDT": cooling}).reasons == (RiskReason.COOLDOWN,)


def test_risk_rejects_a_signal_price_outside_the_collar_around_the_last_market_price():
    collar = TradingConfig(price_collar_bps=Decimal(100))  # 1 %
    assert decide(config=collar, last_price=Decimal("59500")).approved  # 84 bps
    verdict = decide(config=collar, last_price=Decimal("59000"))  # 169 bps
    assert verdict.reasons == (RiskReason.PRICE_COLLAR,)
    assert "169 bps" in verdict.details[0]
    assert decide(last_price=Decimal("30000")).approved  # the collar is off by default


def monitor(**changes) -> BookMonitor:
    return BookMonitor(ProtectionConfig(**changes), Decimal(10000))


def test_five_stop_losses_within_the_window_lock_the_symbol_for_the_cooldown():
    book = monitor(stoploss_guard_count=5, stoploss_guard_window=timedelta(minutes=60), daily_loss_limit_pct=Decimal(0))
    trips = []
    for n in range(5):
        trips += book.close("BTCUSDT", Decimal("-40"), "stop_loss", NOW + timedelta(minutes=10 * n))
    [trip] = trips
    assert trip.reason == "STOPLOSS_GUARD" and trip.lock is not None
    assert trip.lock.symbol == "BTCUSDT" and trip.lock.until == NOW + timedelta(minutes=100)
    assert trip.figures["stop_losses"] == "5"
    # spread out over more than the window: no trip
    slow = monitor(stoploss_guard_count=3, stoploss_guard_window=timedelta(minutes=10))
    assert not [
        t for n in range(6) for t in slow.close("ETHUSDT", Decimal(-1), "stop_loss", NOW + timedelta(minutes=6 * n))
    ]


def test_the_stoploss_guard_with_scope_all_locks_every_symbol_and_take_profits_do_not_count():
    book = monitor(stoploss_guard_count=3, stoploss_guard_scope="all")
    assert not book.close("BTCUSDT", Decimal(5), "take_profit", NOW)
    assert not book.close("BTCUSDT", Decimal(-5), "stop_loss", NOW)
    assert not book.close("ETHUSDT", Decimal(-5), "stop_loss", NOW)
    [trip] = book.close("SOLUSDT", Decimal(-5), "stop_loss", NOW)
    assert trip.lock is not None and trip.lock.symbol == ALL_SYMBOLS


def test_the_daily_loss_limit_halts_once_per_day_and_a_new_utc_day_starts_again():
    book = monitor(daily_loss_limit_pct=Decimal(5), max_drawdown_pct=Decimal(0))
    assert not book.close("BTCUSDT", Decimal("-499.99"), "stop_loss", NOW)
    [trip] = book.close("BTCUSDT", Decimal("-0.01"), "stop_loss", NOW)
    assert trip.halt and trip.reason == "DAILY_LOSS_LIMIT" and trip.figures["day_loss_pct"] == "5.0000"
    assert not book.close("BTCUSDT", Decimal(-100), "stop_loss", NOW)  # halted already
    next_day = NOW + timedelta(days=1)
    assert not book.mark(Decimal(0), next_day)  # 9,400 is the new start of day
    assert book.mark(Decimal(-470), next_day)[0].reason == "DAILY_LOSS_LIMIT"


def test_max_drawdown_counts_from_the_equity_peak_including_unrealized_pnl():
    book = monitor(max_drawdown_pct=Decimal(10), daily_loss_limit_pct=Decimal(0))
    assert not book.close("BTCUSDT", Decimal(2000), "take_profit", NOW)  # peak 12,000
    assert not book.mark(Decimal(-1199), NOW)
    [trip] = book.mark(Decimal(-1200), NOW)
    assert trip.halt and trip.reason == "MAX_DRAWDOWN" and trip.figures["peak_equity"] == "12000"


def test_cooldown_locks_the_symbol_after_each_close_when_set():
    assert not monitor().close("BTCUSDT", Decimal(1), "take_profit", NOW)  # off by default
    [trip] = monitor(cooldown=timedelta(minutes=15)).close("BTCUSDT", Decimal(1), "take_profit", NOW)
    assert trip.lock == SymbolLock(
        "BTCUSDT", RiskReason.COOLDOWN, NOW + timedelta(minutes=15), "cooldown after a close"
    )


def test_invalid_protection_settings_are_named_one_line_each():
    config = ProtectionConfig(max_drawdown_pct=Decimal(-1), stoploss_guard_count=-2, cooldown=timedelta(minutes=-1))
    assert config.problems() == [
        "compliance.max_drawdown_pct must be between 0 and 100 (percent), not -1",
        "compliance.stoploss_guard_count must be >= 0, not -2",
        "compliance.cooldown_min must be >= 0, not -1",
    ]
    assert ProtectionConfig().problems() == []


def test_a_worker_refuses_an_invalid_protection_setting_with_one_line_naming_it(monkeypatch):
    from typer.testing import CliRunner

    from phoenix95.cli.console import UserError
    from phoenix95.cli.main import app
    from phoenix95.settings import get_settings

    monkeypatch.setenv("P95_COMPLIANCE__MAX_DRAWDOWN_PCT", "-3")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["worker", "--stage", "risk"])
    finally:
        get_settings.cache_clear()
    # `p95` prints a UserError as one line and exits 2 (cli/main.py); CliRunner hands it back raw
    assert isinstance(result.exception, UserError)
    assert str(result.exception) == "compliance.max_drawdown_pct must be between 0 and 100 (percent), not -3"


def test_peak_exposure_sweeps_opens_and_closes_within_the_day():
    from phoenix95.storage.compliance_report import peak_exposure

    start = factories.T0
    at = [start + timedelta(hours=h) for h in range(6)]
    rows = [
        ("BTCUSDT", Decimal(100), at[0] - timedelta(hours=1), at[2]),  # open before the day began
        ("BTCUSDT", Decimal(50), at[1], at[3]),
        ("ETHUSDT", Decimal(70), at[2], None),  # a close and an open at one time: close first
        ("BTCUSDT", Decimal(10), at[4], at[5]),
    ]
    peak, total = peak_exposure(rows, start, start + timedelta(days=1))
    assert peak == {"BTCUSDT": Decimal(150), "ETHUSDT": Decimal(70)}
    assert total == Decimal(150)


def test_only_the_kill_switch_close_of_a_position_passes_a_halt_at_execution():
    from phoenix95.agents.execution import ExecutionStage, is_kill_switch_close
    from phoenix95.cli.flatten import close_verdict
    from phoenix95.domain.execution import MarketTick
    from phoenix95.domain.trading_state import TradingState

    position = factories.position()  # BTCUSDT long
    kill = close_verdict(position, actor="cli:ops", reason="test", at=NOW)
    assert (kill.side, kill.intent, kill.close_position_id) == ("short", "close", position.position_id)
    assert is_kill_switch_close(kill)
    tick = MarketTick("BTCUSDT", NOW, Decimal("59000"))
    halted = TradingState.HALTED
    assert ExecutionStage._reject_reason(kill, halted, tick, position.quantity) is None
    # the same close aimed at another position, or any other verdict, is refused while HALTED
    other = kill.model_copy(update={"close_position_id": factories.position().position_id})
    assert not is_kill_switch_close(other)
    assert ExecutionStage._reject_reason(other, halted, tick, position.quantity) == "TRADING_HALTED"
    opening = kill.model_copy(update={"intent": "open"})
    assert ExecutionStage._reject_reason(opening, halted, tick, position.quantity) == "TRADING_HALTED"


def test_a_kill_switch_close_settles_the_position_with_the_reason_manual():
    from phoenix95.domain.positions import close_by_order

    position = factories.position()
    fill = factories.exact_fill(side="sell", price="59000", quantity=position.quantity, at=NOW)
    update = close_by_order(
        position, fill=fill, config=TradingConfig(), funding_rate=lambda s, t: Decimal(0), cause_id="o", reason="manual"
    )
    assert update.position.close_reason == "manual" and not update.position.is_open
