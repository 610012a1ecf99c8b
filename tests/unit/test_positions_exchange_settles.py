"""With a live exchange the exchange settles: its stop-loss, take-profit, liquidation and funding, not the
paper model's. The domain then only marks (on the exchange's mark price) and takes the exchange's numbers."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from phoenix95.domain.config import TradingConfig
from phoenix95.domain.execution import Fill, MarketTick
from phoenix95.domain.positions import apply_funding, close_by_order, default_funding, on_price
from tests import factories

CONFIG = TradingConfig()


def _tick(position, price: str, *, mark: str | None = None, hours: float = 9) -> MarketTick:
    return MarketTick(
        symbol=position.symbol,
        time=position.opened_at + timedelta(hours=hours),
        price=Decimal(price),
        mark_price=Decimal(mark) if mark is not None else None,
        event_id="tick",
    )


def test_a_price_through_the_stop_closes_on_paper_but_only_marks_when_the_exchange_settles():
    position = factories.position()  # long 0.1 BTC at 60,000, stop 58,800
    tick = _tick(position, "58000", mark="58010")
    paper = on_price(position, tick, config=CONFIG, tick_size=Decimal("0.1"), funding_rate=default_funding(CONFIG))
    assert paper.position.status == "closed" and paper.position.close_reason == "stop_loss"
    assert any(e.kind == "funding" for e in paper.events)  # a funding time passed: the paper model charged it
    live = on_price(
        position,
        tick,
        config=CONFIG,
        tick_size=Decimal("0.1"),
        funding_rate=default_funding(CONFIG),
        exchange_settles=True,
    )
    assert live.position.is_open and [e.kind for e in live.events] == ["tick"]
    assert live.position.mark_price == Decimal("58010") and live.position.funding_paid == 0
    assert live.events[0].metrics.unrealized_pnl == Decimal("-199.00000000")  # on the mark, not the last price


def test_exchange_funding_and_closing_fill_make_the_realized_pnl():
    position = factories.position()
    funded = apply_funding(
        position, amount_paid=Decimal("1.25"), time=position.opened_at + timedelta(hours=8), cause_id="funding:1"
    ).position
    assert funded.funding_paid == Decimal("1.25")
    exit_fill = Fill(
        side="sell",
        price=Decimal("58790.5"),
        quantity=Decimal("0.1"),
        notional=Decimal("5879.05"),
        fee=Decimal("2.35162"),
        slippage_rate=Decimal(0),
        reference_price=Decimal("58790.5"),
        time=position.opened_at + timedelta(hours=9),
    )
    closed = close_by_order(
        funded,
        fill=exit_fill,
        config=CONFIG,
        funding_rate=default_funding(CONFIG),
        cause_id="exchange:1",
        reason="stop_loss",
        exchange_settles=True,
    )
    assert [e.kind for e in closed.events] == ["closed"]  # no paper funding on the way
    expected = (
        Decimal("0.1") * (Decimal("58790.5") - Decimal(60000))
        - position.entry_fee
        - Decimal("2.35162")
        - Decimal("1.25")
    )
    assert closed.position.realized_pnl == expected
    assert closed.position.close_reason == "stop_loss" and closed.position.exit_price == Decimal("58790.5")


def test_past_its_expiry_a_live_position_only_marks_the_exchange_closes_it_by_an_order():
    from phoenix95.domain.positions import expiry_due, on_clock

    position = factories.position()
    past = position.auto_close_at + timedelta(seconds=1)
    tick = MarketTick(symbol=position.symbol, time=past, price=Decimal("60100"), event_id="tick")
    paper = on_price(position, tick, config=CONFIG, tick_size=Decimal("0.1"), funding_rate=default_funding(CONFIG))
    assert paper.position.status == "expired"
    for update in (
        on_price(
            position,
            tick,
            config=CONFIG,
            tick_size=Decimal("0.1"),
            funding_rate=default_funding(CONFIG),
            exchange_settles=True,
        ),
        on_clock(
            position,
            past,
            config=CONFIG,
            tick_size=Decimal("0.1"),
            funding_rate=default_funding(CONFIG),
            exchange_settles=True,
        ),
    ):
        assert update.position.is_open and [e.kind for e in update.events] == ["tick"]
        assert expiry_due(update.position, past)
    assert not expiry_due(position, position.auto_close_at - timedelta(seconds=1))


def test_an_expiry_close_is_a_derived_verdict_that_passes_a_halt_like_the_kill_switch():
    from phoenix95.agents.execution import is_kill_switch_close
    from phoenix95.domain import ids
    from phoenix95.schemas.convert import close_verdict

    position = factories.position()
    first, second = (ids.expiry_verdict_id(position.position_id, n) for n in (0, 1))
    assert first == ids.expiry_verdict_id(position.position_id) != second
    assert ids.expiry_attempt(second, position.position_id) == 1
    assert ids.expiry_attempt(first, "another position") is None
    verdict = close_verdict(
        position, verdict_id=first, producer="positions", detail="EXPIRY", trading_state="ACTIVE", at=position.opened_at
    )
    assert verdict.intent == "close" and verdict.side == "short" and verdict.close_position_id == position.position_id
    assert is_kill_switch_close(verdict)
    assert not is_kill_switch_close(verdict.model_copy(update={"verdict_id": ids.derive("x", position.position_id)}))
