"""Compliance monitor stage: p95.positions.ticks + p95.orders -> book figures -> protection trips.

It watches the whole book over time (the risk stage checks each signal on its own): realized and
unrealized PnL of the UTC day, drawdown from the equity peak, stop-loss streaks, orders per minute.
A trip (domain/protections.py) is applied before the input is acknowledged: trading HALTED through
the same path as `p95 halt`, or the symbol locked (the risk stage rejects it with the reason code),
audited with its figures, and announced as a ControlEvent on p95.control.events.

Run one compliance worker: the figures are of the whole book, so it reads every partition.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol

from phoenix95.agents.base import Stage
from phoenix95.agents.ports import InputRecord, Outcome
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


class ComplianceStore(Protocol):
    async def apply_trip(self, trip_id: str, trip: Trip) -> bool: ...

    async def closed_positions(self) -> list[tuple[str, str, Decimal, str | None, datetime]]:
        """(position id, symbol, realized PnL, close reason, closed at), oldest first."""
        ...


class ComplianceStage(Stage):
    name = COMPLIANCE.name
    inputs = COMPLIANCE.inputs

    def __init__(self, codec: Codec, config: ProtectionConfig, starting_equity: Decimal, store: ComplianceStore):
        self.codec = codec
        self.config = config
        self.starting_equity = starting_equity
        self.store = store
        self.monitor = BookMonitor(config, starting_equity)
        self.unrealized: dict[str, Decimal] = {}
        self.closed: set[str] = set()
        self.order_times: deque[datetime] = deque()

    async def start(self) -> None:
        """Rebuild the figures from the closed positions (their trips were applied when they happened)."""
        for position_id, symbol, realized, reason, closed_at in await self.store.closed_positions():
            self.monitor.close(symbol, realized, reason, closed_at)
            self.closed.add(position_id)

    def reset(self) -> None:
        self.monitor = BookMonitor(self.config, self.starting_equity)
        self.unrealized.clear()
        self.closed.clear()
        self.order_times.clear()

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
        return outcomes

    def _order(self, order: Order) -> None:
        self.order_times.append(order.ts_event)
        while self.order_times and self.order_times[0] <= order.ts_event - timedelta(minutes=1):
            self.order_times.popleft()

    def _position(self, event: PositionEvent) -> list[Trip]:
        at = event.closed_at or event.ts_event
        if event.kind in CLOSING_KINDS:
            self.unrealized.pop(event.position_id, None)
            if event.position_id in self.closed:
                return []  # counted already (re-delivered, or rebuilt at start)
            self.closed.add(event.position_id)
            realized = event.realized_pnl or Decimal(0)
            self.monitor.unrealized = sum(self.unrealized.values(), Decimal(0))
            return self.monitor.close(event.symbol, realized, event.close_reason or event.kind, at)
        if event.position_id in self.closed:
            return []
        self.unrealized[event.position_id] = event.unrealized_pnl
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
