"""Builders for the live-exchange tests: approved verdicts, the execution stage on the Binance
connector against the simulator, and positions written to PostgreSQL the way the stages write them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from phoenix95.agents.execution import ExecutionStage
from phoenix95.agents.ports import InputRecord, OrderPlaced, Outcome, PositionChanged
from phoenix95.connectors.exchange.base import ExchangeOrder
from phoenix95.connectors.exchange.brackets import bundled_brackets
from phoenix95.connectors.exchange.live import LiveExchange
from phoenix95.domain import ids
from phoenix95.domain.config import TradingConfig
from phoenix95.domain.execution import Fill, MarketTick
from phoenix95.domain.positions import open_position
from phoenix95.domain.trading_state import TradingState
from phoenix95.schemas.codec import Codec
from phoenix95.schemas.convert import order_message, position_message
from phoenix95.schemas.messages import Order, RiskVerdict
from phoenix95.settings import ExchangeSettings, Settings
from phoenix95.storage.postgres import Database
from phoenix95.storage.sink import StoreSink
from tests import factories


def approved_verdict(symbol: str = "BTCUSDT", price: str = "60000", action: str = "buy") -> RiskVerdict:
    signal = factories.signal(
        symbol=symbol, price=price, confidence="0.9", rsi="40", macd="12", volume="3", action=action
    )
    _, verdict = factories.decided(signal)
    assert verdict.approved and verdict.plan is not None, verdict
    return verdict


def client_id_of(verdict: RiskVerdict) -> str:
    return ids.client_order_id(ids.order_id(verdict.verdict_id))


def sim_settings(base_url: str, **exchange: Any) -> Settings:
    values: dict[str, Any] = {
        "kind": "binance-demo",
        "api_key": "sim-key",
        "api_secret": "sim-secret",
        "base_url": base_url,
        "resolve_interval_s": 0.05,
        "reconcile_interval_s": 0,
        "poll_interval_s": 0.2,
        **exchange,
    }
    return Settings(exchange=ExchangeSettings(**values))


@dataclass
class MemoryState:
    """The execution stage's view of the stores: what it persisted so far (a re-delivered verdict whose
    order was written is answered from here, as PgExecutionState does)."""

    state: TradingState = TradingState.ACTIVE
    written: dict[str, Order] = field(default_factory=dict)
    open: dict[str, Decimal] = field(default_factory=dict)
    entries: dict[str, str] = field(default_factory=dict)

    async def trading_state(self) -> TradingState:
        return self.state

    async def orders(self, verdict_ids: Sequence[str]) -> dict[str, Order]:
        return {v: self.written[v] for v in verdict_ids if v in self.written}

    async def open_quantity(self, position_ids: Sequence[str]) -> dict[str, Decimal]:
        return {p: self.open[p] for p in position_ids if p in self.open}

    async def entry_orders(self, position_ids: Sequence[str]) -> dict[str, str]:
        return {p: self.entries[p] for p in position_ids if p in self.entries}


class StageDriver:
    """The real execution stage on a live connector, fed verdict records directly."""

    def __init__(self, exchange: LiveExchange, state: MemoryState | None = None):
        self.codec = Codec()
        self.state = state or MemoryState()
        self.stage = ExecutionStage(self.codec, exchange, self.state, quiet_fill_after=0)
        self.offset = 0

    def price(self, verdict: RiskVerdict, value: str = "60000") -> None:
        self.stage.observe(
            MarketTick(
                symbol=verdict.symbol,
                time=verdict.ts_event + timedelta(seconds=1),
                price=Decimal(value),
                event_id=ids.derive("tick", verdict.verdict_id),
            )
        )

    async def deliver(self, verdict: RiskVerdict, *, remember: bool = True) -> Order:
        """Process one verdict record; `remember=False` is a crash before the order was written."""
        self.price(verdict)
        self.offset += 1
        record = InputRecord(
            "p95.risk.verdicts", 0, self.offset, None, verdict.symbol.encode(), self.codec.encode(verdict)
        )
        outcomes = await self.stage.process([record])
        assert len(outcomes) == 1 and len(outcomes[0].produce) == 1, outcomes
        order = outcomes[0].produce[0]
        assert isinstance(order, Order)
        if remember:
            self.state.written[verdict.verdict_id] = order
        return order


async def write_open_position(db: Database, verdict: RiskVerdict, fill_price: Decimal, quantity: Decimal) -> str:
    """An open position in PostgreSQL as the execution and positions stages write it; returns its id."""
    assert verdict.plan is not None
    config = TradingConfig()
    brackets = bundled_brackets()
    fill = Fill(
        side="buy" if verdict.side == "long" else "sell",
        price=fill_price,
        quantity=quantity,
        notional=fill_price * quantity,
        fee=Decimal("0.1"),
        slippage_rate=Decimal(0),
        reference_price=fill_price,
        time=verdict.ts_event + timedelta(seconds=1),
    )
    client_id = client_id_of(verdict)
    placed = ExchangeOrder(
        client_id,
        "1",
        verdict.symbol,
        fill.side,
        quantity,
        "FILLED",
        fill.price,
        fill.fee,
        fill.time,
        Decimal(0),
        fill.price,
    )
    order = order_message(verdict, client_id, placed, None, quantity, "binance-demo")
    update = open_position(
        position_id=ids.position_id(order.order_id),
        order_id=order.order_id,
        signal_id=order.signal_id,
        symbol=verdict.symbol,
        side=verdict.side,
        fill=fill,
        leverage=20,
        margin_mode="ISOLATED",
        brackets=brackets.for_symbol(verdict.symbol),
        config=config,
        tick_size=Decimal("0.1"),
    )
    event = position_message(update.position, update.events[0], cause=order.order_id, equity=Decimal(10000))
    record = InputRecord("t", 0, 0, None, None, b"")
    sink = StoreSink(db, None, None)
    failures = await sink.persist("execution", [Outcome(record, persist=[OrderPlaced(order, verdict)])])
    failures += await sink.persist("positions", [Outcome(record, persist=[PositionChanged(event, update.position)])])
    assert not failures, failures
    return update.position.position_id
