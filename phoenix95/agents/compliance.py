"""Compliance monitor stage: p95.positions.ticks + p95.orders -> book figures -> protection trips.

It watches the whole book over time (the risk stage checks each signal on its own): realized and
unrealized PnL of the trading day (UTC unless `compliance.day_timezone` says otherwise), drawdown from
the equity peak, stop-loss streaks per symbol and in total, orders per minute, exposure per symbol
and in total. The figures are published to Redis (`p95 state`) and as gauges at most once a second.
A trip (domain/protections.py) is applied before the input is acknowledged: trading HALTED through
the same path as `p95 halt`, or the symbol locked (the risk stage rejects it with the reason code),
audited with its figures, and announced as a ControlEvent on p95.control.events.

Run one compliance worker: the figures are of the whole book, so it reads every partition.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from phoenix95.agents.base import Stage
from phoenix95.agents.ports import CLOCK_RECORD, InputRecord, Outcome
from phoenix95.domain import ids
from phoenix95.domain.protections import BookMonitor, ProtectionConfig, Trip
from phoenix95.schemas import topics
from phoenix95.schemas.codec import Codec, DecodeError
from phoenix95.schemas.convert import dead_letter
from phoenix95.schemas.envelope import utc_now
from phoenix95.schemas.messages import ControlEvent, Order, PositionEvent
from phoenix95.streams.stages import COMPLIANCE

logger = logging.getLogger(__name__)

CLOSING_KINDS = frozenset({"closed", "liquidated", "expired"})


class FiguresBoard(Protocol):
    """Where the monitor's book figures are shown (Redis for `p95 state` and the dashboard, gauges)."""

    async def publish(self, figures: dict[str, Any]) -> None: ...


class ComplianceStore(Protocol):
    async def apply_trip(self, trip_id: str, trip: Trip) -> bool: ...

    async def closed_positions(self) -> list[tuple[str, str, Decimal, str | None, datetime]]:
        """(position id, symbol, realized PnL, close reason, closed at), oldest first."""
        ...

    async def resume_after_day_halt(self, day_start: datetime, day: str) -> bool:
        """ACTIVE again if trading is HALTED by a DAILY_LOSS_LIMIT trip from before `day_start`."""
        ...


class ComplianceStage(Stage):
    name = COMPLIANCE.name
    inputs = COMPLIANCE.inputs

    def __init__(
        self,
        codec: Codec,
        config: ProtectionConfig,
        starting_equity: Decimal,
        store: ComplianceStore,
        *,
        boards: Sequence[FiguresBoard] = (),
        publish_every_s: float = 1.0,
    ):
        self.codec = codec
        self.config = config
        self.starting_equity = starting_equity
        self.store = store
        self.monitor = BookMonitor(config, starting_equity)
        self.unrealized: dict[str, Decimal] = {}
        #: Open positions' notional (quantity x mark price) by position id, with their symbol.
        self.exposure: dict[str, tuple[str, Decimal]] = {}
        self.closed: set[str] = set()
        self.order_times: deque[datetime] = deque()
        #: Event time of the newest input the figures include.
        self.as_of: datetime | None = None
        self.boards = tuple(boards)
        self.publish_every_s = publish_every_s
        self._published_at = float("-inf")
        self._dirty = False
        #: The trading day whose DAILY_LOSS_LIMIT halt was last looked at (wall clock).
        self._day_checked: str | None = None

    async def start(self) -> None:
        """Rebuild the figures from the closed positions (their trips were applied when they happened)."""
        for position_id, symbol, realized, reason, closed_at in await self.store.closed_positions():
            self.monitor.close(symbol, realized, reason, closed_at)
            self.closed.add(position_id)
            self._seen(closed_at)
        self._dirty = True

    def reset(self) -> None:
        self.monitor = BookMonitor(self.config, self.starting_equity)
        self.unrealized.clear()
        self.exposure.clear()
        self.closed.clear()
        self.order_times.clear()
        self.as_of = None

    def figures(self) -> dict[str, Any]:
        """The book as the monitor sees it (money as exact decimal text)."""
        monitor = self.monitor
        by_symbol: dict[str, Decimal] = {}
        for symbol, notional in self.exposure.values():
            by_symbol[symbol] = by_symbol.get(symbol, Decimal(0)) + notional
        return {
            "as_of": self.as_of.isoformat() if self.as_of is not None else None,
            "day": monitor.day,
            "timezone": self.config.day_timezone,
            "equity": str(monitor.equity),
            "realized_pnl": str(monitor.realized),
            "unrealized_pnl": str(monitor.unrealized),
            "day_start_equity": str(monitor.day_start_equity),
            "day_pnl": str(monitor.day_pnl),
            "peak_equity": str(monitor.peak_equity),
            "drawdown_pct": str(monitor.drawdown_pct.quantize(Decimal("0.0001"))),
            "stop_loss_streaks": {key: count for key, count in sorted(monitor.streaks.items()) if count},
            "orders_per_minute": self.orders_per_minute,
            "exposure": {symbol: str(value) for symbol, value in sorted(by_symbol.items())},
            "total_exposure": str(sum(by_symbol.values(), Decimal(0))),
            "halted_for": sorted(monitor.halted_for),
        }

    async def publish(self, *, force: bool = False) -> None:
        """Show the figures on the boards: at most every `publish_every_s`, and only when changed."""
        if not self.boards or not self._dirty:
            return
        now = time.monotonic()
        if not force and now - self._published_at < self.publish_every_s:
            return
        figures = self.figures()
        for board in self.boards:
            try:
                await board.publish(figures)
            except Exception as error:  # a board is a view: never hold up the monitor for it
                logger.warning("compliance: the figures were not published: %s", error)
        self._published_at = now
        self._dirty = False

    async def on_clock(self, now: datetime) -> list[Outcome]:
        await self.publish()
        day = self.config.day_of(now)
        if day == self._day_checked:
            return []
        resumed = await self.store.resume_after_day_halt(self.config.day_start(now), day)
        self._day_checked = day
        if resumed:
            logger.warning("compliance: DAILY_LOSS_LIMIT halt over: a new trading day (%s), trading ACTIVE", day)
            return [Outcome(CLOCK_RECORD, produce=[day_resume_event(day, now)])]
        return []

    @property
    def orders_per_minute(self) -> int:
        return len(self.order_times)

    async def process(self, records: Sequence[InputRecord]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for record in records:
            try:
                if record.topic.endswith(topics.ORDERS):
                    self._order(self.codec.decode(record.value, Order))
                    outcomes.append(Outcome(record))
                    continue
                event = self.codec.decode(record.value, PositionEvent)
            except DecodeError as error:
                outcomes.append(
                    Outcome(record, dead_letter=dead_letter(self.name, record, error.reason, error.message))
                )
                continue
            trips = self._position(event)
            produced: list[ControlEvent] = []
            for trip in trips:
                trip_id = ids.derive("protection", trip.reason, trip.lock.symbol if trip.lock else "", event.event_id)
                applied = await self.store.apply_trip(trip_id, trip)
                if applied:
                    logger.warning("compliance: %s tripped (%s) by %s", trip.reason, trip.message, event.event_id)
                produced.append(control_event(trip_id, trip, event))
            outcomes.append(Outcome(record, produce=list(produced)))
        self._dirty = True
        await self.publish(force=any(outcome.produce for outcome in outcomes))
        return outcomes

    def _order(self, order: Order) -> None:
        self._seen(order.ts_event)
        self.order_times.append(order.ts_event)
        while self.order_times and self.order_times[0] <= order.ts_event - timedelta(minutes=1):
            self.order_times.popleft()

    def _seen(self, at: datetime) -> None:
        if self.as_of is None or at > self.as_of:
            self.as_of = at

    def _position(self, event: PositionEvent) -> list[Trip]:
        at = event.closed_at or event.ts_event
        self._seen(event.ts_event)
        if event.kind in CLOSING_KINDS:
            self.unrealized.pop(event.position_id, None)
            self.exposure.pop(event.position_id, None)
            if event.position_id in self.closed:
                return []  # counted already (re-delivered, or rebuilt at start)
            self.closed.add(event.position_id)
            realized = event.realized_pnl or Decimal(0)
            self.monitor.unrealized = sum(self.unrealized.values(), Decimal(0))
            return self.monitor.close(event.symbol, realized, event.close_reason or event.kind, at)
        if event.position_id in self.closed:
            return []
        self.unrealized[event.position_id] = event.unrealized_pnl
        self.exposure[event.position_id] = (event.symbol, event.quantity * (event.mark_price or event.price))
        return self.monitor.mark(sum(self.unrealized.values(), Decimal(0)), at)


def control_event(trip_id: str, trip: Trip, cause: PositionEvent) -> ControlEvent:
    """The ControlEvent of a trip; its id is derived from the trip, so a re-delivery is one event."""
    return ControlEvent.model_validate(
        {
            **ControlEvent.envelope(
                event_id=ids.derive("control-event", trip_id),
                correlation_id=cause.correlation_id,
                causation_id=cause.event_id,
                ts_event=trip.at,
                producer="compliance",
                ts_ingest=utc_now(),
            ),
            "kind": "protection",
            "severity": "critical" if trip.halt else "warning",
            "actor": "compliance-monitor",
            "subject": trip.lock.symbol if trip.lock is not None else None,
            "state": "HALTED" if trip.halt else "LOCKED",
            "reason": trip.reason,
            "message": trip.message[:500],
            "details": json.dumps({"trip_id": trip_id, **trip.figures}, sort_keys=True),
        }
    )


def day_resume_event(day: str, now: datetime) -> ControlEvent:
    """The ControlEvent of the DAILY_LOSS_LIMIT halt ending with its day (one per day)."""
    event_id = ids.derive("control-event", "day-resume", day)
    return ControlEvent.model_validate(
        {
            **ControlEvent.envelope(
                event_id=event_id,
                correlation_id=event_id,
                causation_id=None,
                ts_event=now,
                producer="compliance",
                ts_ingest=utc_now(),
            ),
            "kind": "trading_state",
            "severity": "info",
            "actor": "compliance-monitor",
            "state": "ACTIVE",
            "reason": "DAILY_LOSS_LIMIT",
            "message": f"a new trading day ({day}): the daily loss limit's halt is over, trading ACTIVE",
            "details": json.dumps({"day": day}),
        }
    )
