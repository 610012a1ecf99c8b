"""One realistic message of every type, built by the same functions the stages use."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from phoenix95.agents.ports import ExchangeOrder, InputRecord
from phoenix95.connectors.exchange.brackets import bundled_brackets
from phoenix95.domain import ids
from phoenix95.domain.config import TradingConfig
from phoenix95.domain.execution import fill_market_order
from phoenix95.domain.positions import open_position
from phoenix95.schemas.codec import Reason
from phoenix95.schemas.convert import dead_letter, order_message, position_message
from phoenix95.schemas.envelope import Event
from tests import factories


def samples() -> list[Event]:
    config = TradingConfig()
    brackets = bundled_brackets()
    signal = factories.signal(symbol="BTCUSDT", price="60000", confidence="0.9", rsi="40", macd="12", volume="3")
    analysis, verdict = factories.decided(signal, config=config)
    assert verdict.plan is not None
    fill = fill_market_order(
        side="buy",
        quantity=verdict.plan.quantity,
        reference_price=Decimal("60010"),
        time=analysis.ts_event + timedelta(minutes=5),
        config=config,
        tick_size=Decimal("0.1"),
    )
    client_id = ids.client_order_id(ids.order_id(verdict.verdict_id))
    placed = ExchangeOrder(
        client_id,
        "paper-1",
        "BTCUSDT",
        "buy",
        fill.quantity,
        "FILLED",
        fill.price,
        fill.fee,
        fill.time,
        fill.slippage_rate,
        fill.reference_price,
    )
    order = order_message(verdict, client_id, placed, None, fill.quantity, "paper")
    update = open_position(
        position_id=ids.position_id(order.order_id),
        order_id=order.order_id,
        signal_id=order.signal_id,
        symbol="BTCUSDT",
        side="long",
        fill=fill,
        leverage=20,
        margin_mode="ISOLATED",
        brackets=brackets.for_symbol("BTCUSDT"),
        config=config,
        tick_size=Decimal("0.1"),
    )
    tick = position_message(update.position, update.events[0], cause=order.order_id, equity=Decimal(10000))
    price = factories.price(symbol="BTCUSDT", value="60010", high="60100", low="59950", volume="12.5")
    record = InputRecord("p95.signals", 0, 7, analysis.ts_event, b"BTCUSDT", b"\x00garbage", (("content-type", b"x"),))
    dead = dead_letter("analysis", record, Reason.DECODE_ERROR, "truncated")
    return [signal, analysis, verdict, order, tick, price, dead]
