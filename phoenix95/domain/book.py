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
from phoenix95.domain.positions import Position, Update, close_by_order, evolve, on_price, open_position, roe_at
from phoenix95.domain.risk import Exposure, ExposureSummary
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
    _by_symbol: dict[str, list[str]] = field(default_factory=dict)
    _guards: dict[str, _Guard | None] = field(default_factory=dict)
    _skipped: dict[str, _Skipped] = field(default_factory=dict)
    #: Ids of the orders submitted, and of those that opened the positions held or restored.
    _orders: set[str] = field(default_factory=set)
    #: The open positions' margin and notional per symbol, kept as positions open and close (they
    #: are fixed at the open), so a risk check does not sum the whole book for every decision.
    _open_margin: Decimal = ZERO
    _open_notional: dict[str, Decimal] = field(default_factory=dict)

    @property
    def equity(self) -> Decimal:
        return self.config.starting_equity + self.realized

    def submit(self, order: PendingOrder) -> bool:
        """Queue a market order for the next price of its symbol. Idempotent: an order the book
        already holds (waiting, or filled) is not queued again, so a verdict processed twice never
        fills twice nor re-opens its position. Returns whether the order was queued."""
        if order.order_id in self._orders or any(o.order_id == order.order_id for o in self.pending):
            return False
        self._orders.add(order.order_id)
        self.pending.append(order)
        return True

    def exposures(self) -> tuple[Exposure, ...]:
        """Open positions and orders waiting for their fill (the risk checks' view)."""
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

    def exposure_summary(self) -> ExposureSummary:
        """`exposures()` summed, in O(symbols + pending orders)."""
        count = len(self.open)
        margin = self._open_margin
        notional = dict(self._open_notional)
        for o in self.pending:
            if o.intent == "open":
                count += 1
                margin += o.planned_margin
                notional[o.symbol] = notional.get(o.symbol, ZERO) + o.planned_notional
        return ExposureSummary(count, margin, notional)

    def on_price(self, tick: MarketTick) -> list[BookEvent]:
        """Apply one price event: fill the symbol's orders waiting for it, then mark its positions.

        A tick that can change no position (inside every stop, target and liquidation level of the
        symbol, before the next funding or expiry time) is only remembered; the positions catch up
        with it (last price, mark, best and worst ROE) before the next tick that can change them.
        Closes, fills and funding are exactly those of applying every tick."""
        events: list[BookEvent] = []
        symbol = tick.symbol
        self.last_tick[symbol] = tick
        filled_now = False
        if self.pending:
            due = [o for o in self.pending if o.symbol == symbol and tick.time >= o.decision_time]
            if due:
                self.pending = [o for o in self.pending if o not in due]
                for order in due:
                    filled = self._fill(order, tick)
                    if filled is not None:
                        events.append(filled)
                        filled_now = True
        ids_ = self._by_symbol.get(symbol)
        if not ids_:
            return events
        guard = self._guards.get(symbol)
        if not filled_now and guard is not None and guard.lets_through(tick):
            skipped = self._skipped.get(symbol)
            self._skipped[symbol] = _Skipped.of(tick) if skipped is None else skipped.add(tick)
            return events
        self._catch_up(symbol)
        config = self.config.for_symbol(symbol)
        tick_size = config.rules(symbol).tick_size
        for position_id in list(ids_):
            update = on_price(
                self.open[position_id], tick, config=config, tick_size=tick_size, funding_rate=self.funding
            )
            if update.events:
                self._apply(update)
                events.append(Marked(update))
        self._guard(symbol)
        return events

    def _catch_up(self, symbol: str) -> None:
        skipped = self._skipped.pop(symbol, None)
        if skipped is None:
            return
        for position_id in self._by_symbol.get(symbol, ()):
            position = self.open[position_id]
            if skipped.last.time <= position.last_event_time:
                continue
            self.open[position_id] = evolve(
                position,
                last_price=skipped.last.price,
                mark_price=skipped.last.mark,
                last_event_time=skipped.last.time,
                max_roe=max(
                    position.max_roe, roe_at(position, skipped.highest if position.side == "long" else skipped.lowest)
                ),
                min_roe=min(
                    position.min_roe, roe_at(position, skipped.lowest if position.side == "long" else skipped.highest)
                ),
            )

    def _guard(self, symbol: str) -> None:
        positions = [self.open[p] for p in self._by_symbol.get(symbol, ())]
        self._guards[symbol] = _Guard.of(positions) if positions else None  # type: ignore[assignment]

    def positions(self) -> list[Position]:
        """Open positions, caught up with every price seen."""
        for symbol in list(self._skipped):
            self._catch_up(symbol)
        return list(self.open.values())

    def _fill(self, order: PendingOrder, tick: MarketTick) -> Filled | None:
        config = self.config.for_symbol(order.symbol)
        tick_size = config.rules(order.symbol).tick_size
        quantity = order.quantity
        target: Position | None = None
        if order.intent == "close":
            self._catch_up(order.symbol)
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
            if position.position_id not in self.open:
                self._by_symbol.setdefault(position.symbol, []).append(position.position_id)
                self._orders.add(position.order_id)
                self._open_margin += position.margin
                self._open_notional[position.symbol] = (
                    self._open_notional.get(position.symbol, ZERO) + position.notional
                )
            self.open[position.position_id] = position
            self._guard(position.symbol)
        elif position.position_id in self.open:
            held = self.open.pop(position.position_id)
            self._open_margin -= held.margin
            self._open_notional[held.symbol] -= held.notional
            self._by_symbol[position.symbol].remove(position.position_id)
            self.closed.append(position)
            self.realized += position.realized_pnl
            self._guard(position.symbol)

    def restore(self, positions: list[Position]) -> None:
        for position in positions:
            self._apply(Update(position, ()))


@dataclass(frozen=True)
class _Guard:
    """Prices strictly inside (low, high) before `until` change no open position of a symbol."""

    low: Decimal
    high: Decimal
    until: datetime

    @classmethod
    def of(cls, positions: list[Position]) -> _Guard:
        lows, highs, times = [], [], []
        for p in positions:
            if p.side == "long":
                lows.append(max(p.stop_loss_price, p.liquidation_price))
                highs.append(p.take_profit_price)
            else:
                lows.append(p.take_profit_price)
                highs.append(
                    min(p.stop_loss_price, p.liquidation_price) if p.liquidation_price > 0 else p.stop_loss_price
                )
            times.append(min(p.next_funding_at, p.auto_close_at))
        return cls(max(lows), min(highs), min(times))

    def lets_through(self, tick: MarketTick) -> bool:
        if tick.time >= self.until:
            return False
        for value in (tick.price, tick.open, tick.low, tick.high, tick.mark_price):
            if value is not None and not (self.low < value < self.high):
                return False
        return True


@dataclass(frozen=True)
class _Skipped:
    last: MarketTick
    highest: Decimal
    lowest: Decimal

    @classmethod
    def of(cls, tick: MarketTick) -> _Skipped:
        return cls(tick, tick.mark, tick.mark)

    def add(self, tick: MarketTick) -> _Skipped:
        mark = tick.mark
        return _Skipped(
            tick, mark if mark > self.highest else self.highest, mark if mark < self.lowest else self.lowest
        )
