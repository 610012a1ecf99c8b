"""In-process replay: every stage's code driven directly, in event-time order, with a simulated clock.

Signals are analysed by `schemas.convert.analyze` (as the analysis stage does), decided by the
risk stage's `RiskDesk` on the event clock, filled and marked by the `PaperBook` the risk stage
itself uses — so the orders, fills and position closes are the ones the Kafka pipeline produces for
the same input. A signal at
time t is decided after the prices before t and before the price at t (which fills its order).

Monitoring ticks (every 5 s of simulated time while a position is open) are counted, not
materialised: between price events a position does not change, and expiry and funding happen at
their exact simulated times inside the position code.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from phoenix95.agents.ports import ExchangeOrder
from phoenix95.agents.risk_desk import RiskDesk
from phoenix95.domain import ids
from phoenix95.domain.book import Filled, Marked
from phoenix95.domain.brackets import BracketTable
from phoenix95.domain.config import TradingConfig
from phoenix95.domain.execution import MarketTick, OrderRejectReason, fill_market_order
from phoenix95.domain.funding import FundingSchedule
from phoenix95.domain.positions import Position, open_position
from phoenix95.domain.positions import PositionEvent as DomainPositionEvent
from phoenix95.domain.protections import ProtectionConfig
from phoenix95.domain.trading_state import TradingState
from phoenix95.domain.values import entry_order_side
from phoenix95.schemas.convert import analyze, order_message, position_message
from phoenix95.schemas.envelope import Event
from phoenix95.schemas.messages import Analysis, Order, PositionEvent, RiskVerdict, Signal

ReplayEvent = Signal | MarketTick


def event_order(event: ReplayEvent) -> tuple[datetime, int, str]:
    """Event-time order; at equal times a signal comes before the price that fills its order."""
    if isinstance(event, MarketTick):
        return (event.time, 1, event.symbol)
    return (event.ts_event, 0, event.event_id)


def merged(signals: Iterable[Signal], ticks: Iterable[MarketTick]) -> Iterator[ReplayEvent]:
    """Merge a time-ordered signal stream with a time-ordered price stream, in `event_order`."""
    return heapq.merge(signals, ticks, key=event_order)


@dataclass
class ReplayResult:
    analyses: list[Analysis] = field(default_factory=list)
    verdicts: list[RiskVerdict] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)
    position_events: list[PositionEvent] = field(default_factory=list)
    closed: list[Position] = field(default_factory=list)
    open: list[Position] = field(default_factory=list)
    #: (time, equity) after every realized change, starting with the starting equity.
    equity_curve: list[tuple[datetime, Decimal]] = field(default_factory=list)
    events: int = 0
    signals: int = 0
    prices: int = 0
    monitoring_ticks: int = 0
    first_time: datetime | None = None
    last_time: datetime | None = None
    elapsed_s: float = 0.0


class InProcessEngine:
    def __init__(
        self,
        config: TradingConfig,
        brackets: BracketTable,
        *,
        funding: FundingSchedule | None = None,
        on_progress: Callable[[int], None] | None = None,
        keep_position_events: bool = True,
        protections: ProtectionConfig | None = None,
    ):
        self.config = config
        self.desk = RiskDesk(config, brackets, clock="event", funding=funding, protections=protections)
        self.on_progress = on_progress
        self.keep_position_events = keep_position_events
        self._verdicts: dict[str, RiskVerdict] = {}
        self.result = ReplayResult()

    def run(self, events: Iterable[ReplayEvent], *, already_sorted: bool = False) -> ReplayResult:
        started = time.perf_counter()
        ordered = events if already_sorted else sorted(events, key=event_order)
        result = self.result
        apply_tick = self.desk.apply_tick
        progress = self.on_progress
        count = prices = 0
        last: datetime | None = None
        for event in ordered:
            count += 1
            if type(event) is MarketTick:
                prices += 1
                last = event.time
                book_events = apply_tick(event)
                if book_events:
                    self._on_book_events(book_events)
            else:
                assert isinstance(event, Signal)
                last = event.ts_event
                result.signals += 1
                self._on_signal(event)
            if result.first_time is None:
                result.first_time = last
                result.equity_curve.append((last, self.config.starting_equity))
            if progress is not None and count % 10000 == 0:
                progress(count)
        result.events, result.prices, result.last_time = count, prices, last
        self._finish()
        result.elapsed_s = time.perf_counter() - started
        return result

    def _on_signal(self, signal: Signal) -> None:
        analysis = analyze(signal, producer="replay")
        verdict = self.desk.decide_on_book(analysis, TradingState.ACTIVE)
        self.result.analyses.append(analysis)
        self.result.verdicts.append(verdict)
        self._verdicts[verdict.verdict_id] = verdict

    def _on_book_events(self, events: Iterable[Filled | Marked]) -> None:
        for item in events:
            if isinstance(item, Filled):
                verdict = self._verdicts[item.order.verdict_id]
                self.result.orders.append(_order(verdict, item.fill))
            self._on_update(item.update.position, item.update.events)

    def _on_update(self, position: Position, events: Iterable[DomainPositionEvent]) -> None:
        for event in events:
            if event.kind in ("closed", "liquidated", "expired"):
                self.result.closed.append(position)
                self.result.equity_curve.append((position.closed_at or position.last_event_time, self.desk.book.equity))
            if self.keep_position_events:
                self.result.position_events.append(
                    position_message(position, event, cause=event.cause_id, equity=self.desk.book.equity)
                )

    def _finish(self) -> None:
        """End of the input: orders still waiting for a next price fill at the last one (as the
        execution stage does once the feed is quiet), or are rejected without any price."""
        book = self.desk.book
        for order in list(book.pending):
            book.pending.remove(order)
            verdict = self._verdicts[order.verdict_id]
            last = book.last_tick.get(order.symbol)
            if last is None:
                self.result.orders.append(
                    order_message(
                        verdict, _client_id(verdict), None, OrderRejectReason.NO_MARKET_DATA, order.quantity, "paper"
                    )
                )
                continue
            config = self.config.for_symbol(order.symbol)
            tick = MarketTick(order.symbol, order.decision_time, last.price, volume=last.volume, event_id=last.event_id)
            if order.intent == "open":
                fill = fill_market_order(
                    side=entry_order_side(order.side),
                    quantity=order.quantity,
                    reference_price=tick.price,
                    time=max(last.time, order.decision_time),
                    config=config,
                    tick_size=config.rules(order.symbol).tick_size,
                    volume=tick.volume,
                    price_event_id=tick.event_id,
                )
                update = open_position(
                    position_id=ids.position_id(order.order_id),
                    order_id=order.order_id,
                    signal_id=order.signal_id,
                    symbol=order.symbol,
                    side=order.side,
                    fill=fill,
                    leverage=order.leverage,
                    margin_mode=order.margin_mode,
                    brackets=self.desk.brackets.for_symbol(order.symbol),
                    config=config,
                    tick_size=config.rules(order.symbol).tick_size,
                )
                book._apply(update)
                self.result.orders.append(_order(verdict, fill))
                self._on_update(update.position, update.events)
        self.result.open = book.positions()
        end = self.result.last_time
        interval = self.config.monitoring_interval
        for position in [*self.result.closed, *self.result.open]:
            until = position.closed_at or end or position.opened_at
            self.result.monitoring_ticks += (
                int((until - position.opened_at) / interval) if until > position.opened_at else 0
            )


def _client_id(verdict: RiskVerdict) -> str:
    return ids.client_order_id(ids.order_id(verdict.verdict_id))


def _order(verdict: RiskVerdict, fill: object) -> Order:
    from phoenix95.domain.execution import Fill

    assert isinstance(fill, Fill)
    placed = ExchangeOrder(
        client_order_id=_client_id(verdict),
        exchange_order_id="paper-" + ids.derive("paper-order", _client_id(verdict)),
        symbol=verdict.symbol,
        side=fill.side,
        quantity=fill.quantity,
        status="FILLED",
        fill_price=fill.price,
        fee=fill.fee,
        filled_at=fill.time,
        slippage_rate=fill.slippage_rate,
        reference_price=fill.reference_price,
    )
    return order_message(verdict, placed.client_order_id, placed, None, fill.quantity, "paper")


def produced_events(result: ReplayResult) -> list[Event]:
    return [*result.analyses, *result.verdicts, *result.orders, *result.position_events]
