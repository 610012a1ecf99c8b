"""The paper book: the paper account in event time.

It holds what the execution and position stages hold — market orders waiting for the next price,
open positions, realized PnL — and applies the very same domain functions in event-time order:
an order submitted at decision time ``d`` fills at the first price at or after ``d`` (slippage and
taker fee from `execution`), positions are opened, marked, funded and closed by `positions`.

It is the engine of the in-process replay, and the risk stage's portfolio view when the pipeline
runs on event time (replays, the demo): the same input then gives the same decisions in both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

from phoenix95.domain.brackets import BracketTable
from phoenix95.domain.config import TradingConfig
from phoenix95.domain.execution import Fill, MarketTick, fill_market_order
from phoenix95.domain.positions import Position, Update, close_by_order, on_price, open_position
from phoenix95.domain.risk import Exposure
from phoenix95.domain.values import ZERO, Side, entry_order_side

FundingRate = Callable[[str, datetime], Decimal]


@dataclass(frozen=True)
class PendingOrder:
    order_id: str
    verdict_id: str
    signal_id: str
    symbol: str
    side: Side
    intent: Literal["open", "close"]
    quantity: Decimal
    decision_time: datetime
    leverage: int
    margin_mode: str
    planned_margin: Decimal
    planned_notional: Decimal
    close_position_id: str | None = None


@dataclass(frozen=True)
class Filled:
    order: PendingOrder
    fill: Fill
    update: Update


@dataclass(frozen=True)
class Marked:
    update: Update


BookEvent = Filled | Marked


@dataclass
class PaperBook:
    config: TradingConfig
    brackets: BracketTable
    funding: FundingRate
    position_id_of: Callable[[str], str]
    pending: list[PendingOrder] = field(default_factory=list)
    open: dict[str, Position] = field(default_factory=dict)
    closed: list[Position] = field(default_factory=list)
    realized: Decimal = ZERO
    last_tick: dict[str, MarketTick] = field(default_factory=dict)

    @property
    def equity(self) -> Decimal:
        return self.config.starting_equity + self.realized

    def submit(self, order: PendingOrder) -> None:
        self.pending.append(order)

    def exposures(self) -> tuple[Exposure, ...]:
        opened = [
            Exposure(p.position_id, p.symbol, p.side, p.quantity, p.notional, p.margin, p.opened_at)
            for p in self.open.values()
        ]
        waiting = [
            Exposure(
                o.verdict_id,
                o.symbol,
                o.side,
                o.quantity,
                o.planned_notional,
                o.planned_margin,
                o.decision_time,
                pending=True,
            )
            for o in self.pending
            if o.intent == "open"
        ]
        return (*opened, *waiting)

    def on_price(self, tick: MarketTick) -> list[BookEvent]:
        """Apply one price event: fill the symbol's orders waiting for it, then mark its positions."""
        events: list[BookEvent] = []
        self.last_tick[tick.symbol] = tick
        due = [o for o in self.pending if o.symbol == tick.symbol and tick.time >= o.decision_time]
        if due:
            self.pending = [o for o in self.pending if o not in due]
            for order in due:
                filled = self._fill(order, tick)
                if filled is not None:
                    events.append(filled)
        config = self.config.for_symbol(tick.symbol)
        tick_size = config.rules(tick.symbol).tick_size
        for position in [p for p in self.open.values() if p.symbol == tick.symbol]:
            update = on_price(position, tick, config=config, tick_size=tick_size, funding_rate=self.funding)
            if update.events:
                self._apply(update)
                events.append(Marked(update))
        return events

    def _fill(self, order: PendingOrder, tick: MarketTick) -> Filled | None:
        config = self.config.for_symbol(order.symbol)
        tick_size = config.rules(order.symbol).tick_size
        quantity = order.quantity
        target: Position | None = None
        if order.intent == "close":
            target = self.open.get(order.close_position_id or "")
            if target is None:
                return None
            quantity = target.quantity
        fill = fill_market_order(
            side=entry_order_side(order.side),
            quantity=quantity,
            reference_price=tick.price,
            time=max(tick.time, order.decision_time),
            config=config,
            tick_size=tick_size,
            volume=tick.volume,
            price_event_id=tick.event_id,
        )
        if target is not None:
            update = close_by_order(
                target, fill=fill, config=config, funding_rate=self.funding, cause_id=order.order_id
            )
        else:
            update = open_position(
                position_id=self.position_id_of(order.order_id),
                order_id=order.order_id,
                signal_id=order.signal_id,
                symbol=order.symbol,
                side=order.side,
                fill=fill,
                leverage=order.leverage,
                margin_mode=order.margin_mode,
                brackets=self.brackets.for_symbol(order.symbol),
                config=config,
                tick_size=tick_size,
            )
        self._apply(update)
        return Filled(order, fill, update)

    def _apply(self, update: Update) -> None:
        position = update.position
        if position.is_open:
            self.open[position.position_id] = position
        elif position.position_id in self.open:
            del self.open[position.position_id]
            self.closed.append(position)
            self.realized += position.realized_pnl
