"""What a stage hands to the outside world, and the small interfaces (ports) it does it through.

A stage turns a batch of input records into one `Outcome` per input: the events to produce, the
facts to persist, or a dead letter. Adapters (storage, producer) implement the ports; the app factory
wires them, so a stage never imports an adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from phoenix95.domain.positions import Position
from phoenix95.schemas.envelope import Event
from phoenix95.schemas.messages import (
    Analysis,
    DeadLetter,
    MarketPrice,
    Order,
    PositionEvent,
    RiskVerdict,
    Signal,
)


@dataclass(frozen=True)
class InputRecord:
    """One Kafka message as a stage received it (raw bytes; decoding happens in the stage)."""

    topic: str
    partition: int
    offset: int
    timestamp: datetime | None
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes | None], ...] = ()


@dataclass(frozen=True)
class SignalAnalyzed:
    signal: Signal
    analysis: Analysis


@dataclass(frozen=True)
class VerdictMade:
    verdict: RiskVerdict


@dataclass(frozen=True)
class OrderPlaced:
    order: Order
    verdict: RiskVerdict


@dataclass(frozen=True)
class PositionChanged:
    event: PositionEvent
    position: Position
    #: False for a mark-to-market tick kept from the topic and the time series (see mark_interval):
    #: only the latest state is written.
    published: bool = True


@dataclass(frozen=True)
class PriceObserved:
    price: MarketPrice


@dataclass(frozen=True)
class DeadLettered:
    dead_letter: DeadLetter


@dataclass(frozen=True)
class Outboxed:
    """Events a stage is about to produce, written in the same transaction as the state they came
    from (see `Outbox`)."""

    outbox_id: str
    stage: str
    payload: bytes


Fact = SignalAnalyzed | VerdictMade | OrderPlaced | PositionChanged | PriceObserved | DeadLettered | Outboxed


@dataclass
class Outcome:
    """Everything one input record caused."""

    record: InputRecord
    produce: list[Event] = field(default_factory=list)
    persist: list[Fact] = field(default_factory=list)
    #: Set when the input goes to the dead-letter topic instead.
    dead_letter: DeadLetter | None = None


class Sink(Protocol):
    """Persists facts: PostgreSQL rows, Redis hot state, time-series points."""

    async def persist(self, stage: str, outcomes: Sequence[Outcome]) -> list[tuple[int, Exception]]:
        """Write the facts of all outcomes; return (index, error) of those that failed permanently."""
        ...


class Outbox(Protocol):
    """A transactional outbox, for a stage whose outputs cannot be derived again from what it wrote.

    The positions stage is one: once a fill's position row is written, a re-delivered fill finds the
    position and opens nothing, so the "opened" event of a worker killed between its writes and its
    produce would be lost. With an outbox the events are written with the rows (one transaction),
    deleted once the broker confirmed them, and produced again by the next worker that starts."""

    def entry(self, stage: str, events: Sequence[Event]) -> Outboxed: ...

    async def pending(self, stage: str) -> list[tuple[str, list[Event]]]:
        """(outbox id, events) of every entry not yet confirmed, oldest first."""
        ...

    async def done(self, outbox_ids: Sequence[str]) -> None: ...


class Publisher(Protocol):
    """Produces events and waits until the broker confirmed them."""

    async def publish(self, events: Sequence[Event], *, dead_letter_keys: Sequence[bytes | None] = ()) -> None: ...
