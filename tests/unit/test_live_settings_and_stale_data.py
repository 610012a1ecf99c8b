"""A stale live feed makes risk reject new signals with SIGNAL_STALE (wall clock only: replays and
the demo, on the event clock, are not affected)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from phoenix95.agents.risk_desk import RiskDesk
from phoenix95.connectors.exchange.brackets import bundled_brackets
from phoenix95.domain.config import TradingConfig
from phoenix95.domain.trading_state import TradingState
from phoenix95.schemas.convert import analyze
from phoenix95.schemas.envelope import utc_now
from phoenix95.settings import ExchangeSettings, RiskSettings, Settings
from tests import factories


def _decide(desk: RiskDesk, price_age_s: float | None):
    now = utc_now()
    if price_age_s is not None:
        desk.observe_price(factories.price(symbol="BTCUSDT", value="60000", at=now - timedelta(seconds=price_age_s)))
    signal = factories.signal(
        symbol="BTCUSDT", price="60000", confidence="0.9", rsi="40", macd="12", volume="3", at=now
    )
    return desk.decide(analyze(signal), Decimal(10000), TradingState.ACTIVE, [])


def test_a_signal_with_fresh_market_data_passes_and_one_with_stale_or_no_data_is_stale():
    def desk() -> RiskDesk:
        return RiskDesk(TradingConfig(), bundled_brackets(), clock="wall", max_market_data_age_seconds=15)

    fresh = _decide(desk(), 2)
    assert fresh.approved, fresh.details
    stale = _decide(desk(), 40)
    assert not stale.approved and "SIGNAL_STALE" in stale.reasons
    assert any("stale feed" in d for d in stale.details)
    none = _decide(desk(), None)
    assert not none.approved and "SIGNAL_STALE" in none.reasons


def test_without_a_limit_the_age_of_market_data_is_not_checked():
    desk = RiskDesk(TradingConfig(), bundled_brackets(), clock="wall")
    assert _decide(desk, 40).approved


def test_the_limit_is_on_by_default_only_with_a_live_exchange():
    assert Settings().market_data_age_limit() is None  # paper: the demo and replays are unchanged
    live = Settings(exchange=ExchangeSettings(kind="binance-demo"))
    assert live.market_data_age_limit() == 15.0
    explicit = Settings(risk=RiskSettings(max_market_data_age_s=5))
    assert explicit.market_data_age_limit() == 5.0


def test_exchange_keys_are_masked_and_live_trading_needs_its_confirmation():
    settings = Settings(exchange=ExchangeSettings(kind="binance", api_key="AKEY123", api_secret="SECRET456"))
    shown = str(settings.masked())
    assert "AKEY123" not in shown and "SECRET456" not in shown
    assert settings.masked()["exchange"]["api_key"] == "**********"
    assert any("LIVE_CONFIRM=yes" in p for p in settings.exchange.problems())
    confirmed = ExchangeSettings(kind="binance", api_key="k", api_secret="s", live_confirm="yes")
    assert confirmed.problems() == []
    assert any("API_KEY" in p for p in ExchangeSettings(kind="binance-demo").problems())
    assert ExchangeSettings().kind == "paper" and ExchangeSettings().problems() == []
