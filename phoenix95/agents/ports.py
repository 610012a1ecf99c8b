"""What a stage hands to the outside world, and every small interface (port) it does it through.

A stage turns a batch of input records into one `Outcome` per input: the events to produce, the
facts to persist, or a dead letter. Adapters (storage, producer, exchange connectors) implement the
ports; the composition root (`streams/wiring.py`) wires them, so a stage never imports an adapter.

Write ports: `Sink`, `Outbox`, `Publisher`. Read ports: `PortfolioReader` (risk), `LagProbe`
(risk), `ExecutionState` (execution), `PositionStore` (positions), `SeenSignals` (analysis), and
the exchange connector contract (`ExchangeConnector`, re-exported from `connectors/exchange/base.py`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol

from phoenix95.connectors.exchange.base import ExchangeConnector, ExchangeOrder, OrderRequest
from phoenix95.domain.book import PendingOrder
from phoenix95.domain.config import SymbolRules
from phoenix95.domain.positions import Position
from phoenix95.domain.protections import ClosedFact
from phoenix95.domain.risk import Exposure, RecentSignal
from phoenix95.domain.trading_state import TradingState
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


@dataclass(frozen=True)
class ExchangeFundingApplied:
    """A funding payment the exchange reported (its income id), applied to a position: written with
    the position's new funding_paid, so a payment is applied once. `after_close`: the position had
    closed when the payment was reported; the write itself adds it to the closed position's funding
    and realized PnL (and its trade's), once per (position, income id)."""

    position_id: str
    exchange: str
    tran_id: int
    amount: Decimal
    at: datetime
    after_close: bool = False


Fact = (
    SignalAnalyzed
    | VerdictMade
    | OrderPlaced
    | PositionChanged
    | PriceObserved
    | DeadLettered
    | Outboxed
    | ExchangeFundingApplied
)


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


# Read ports, one group per stage that reads.


@dataclass(frozen=True)
class Snapshot:
    """The portfolio as the risk stage decides on it (wall clock)."""

    equity: Decimal
    trading_state: TradingState
    exposures: tuple[Exposure, ...]


class PortfolioReader(Protocol):
    async def snapshot(self) -> Snapshot: ...

    async def verdicts(self, verdict_ids: Sequence[str]) -> dict[str, RiskVerdict]: ...

    async def recent(self, window: timedelta) -> tuple[list[datetime], list[RecentSignal]]: ...

    async def book_state(self) -> tuple[list[Position], list[PendingOrder], Decimal]: ...

    async def closed_positions(self) -> list[ClosedFact]:
        """Every closed position (the event-clock protections' figures are rebuilt from them)."""
        ...

    async def trading_state(self) -> TradingState: ...


class LagProbe(Protocol):
    def lag_seconds(self) -> float: ...


class ExecutionState(Protocol):
    async def trading_state(self) -> TradingState: ...

    async def orders(self, verdict_ids: Sequence[str]) -> dict[str, Order]: ...

    async def open_quantity(self, position_ids: Sequence[str]) -> dict[str, Decimal]: ...

    async def entry_orders(self, position_ids: Sequence[str]) -> dict[str, str]:
        """The id of the order that opened each of these positions."""
        ...


class SymbolRulesSource(Protocol):
    """A live exchange's symbol filters (tick size, step size, minimum notional and quantity), for risk."""

    async def symbol_rules(self) -> Mapping[str, SymbolRules]: ...


@dataclass(frozen=True)
class ExchangeCloseFill:
    """A fill of a position's exchange-side protection (a stop-loss or take-profit that fired)."""

    trade_id: int
    kind: str  # stop_loss | take_profit
    price: Decimal
    quantity: Decimal
    commission: Decimal | None  # USDT; None while not known in USDT (see reconciliation)
    time: datetime


@dataclass(frozen=True)
class ClosedHolder:
    """A closed position that held its symbol when a funding payment was made."""

    position_id: str
    quantity: Decimal


@dataclass(frozen=True)
class ExchangeFunding:
    """A funding payment of a symbol, as the exchange reported it (amount < 0: paid), with the positions
    of the symbol that held it at its time but have closed since (it was reported after their close)."""

    tran_id: int
    symbol: str
    amount: Decimal
    time: datetime
    closed_holders: tuple[ClosedHolder, ...] = ()


@dataclass(frozen=True)
class LedgerEntries:
    #: By the entry's client order id: the fills of its protection orders.
    close_fills: Mapping[str, Sequence[ExchangeCloseFill]] = field(default_factory=dict)
    #: Funding payments not yet applied to any position, oldest first.
    funding: Sequence[ExchangeFunding] = ()


class ExchangeLedger(Protocol):
    """What a live exchange reported that the positions stage applies: protection fills and funding."""

    name: str

    async def entries(
        self, entry_client_order_ids: Sequence[str], symbols: Sequence[str] | None, since: datetime
    ) -> LedgerEntries:
        """Protection fills of these entries, and the funding not applied yet of these symbols (None:
        of every symbol) paid at or after `since`, each with its closed holders."""
        ...


class PositionStore(Protocol):
    async def open_positions(self) -> list[Position]: ...

    async def positions(self, position_ids: Sequence[str]) -> dict[str, Position]: ...

    async def realized_pnl(self) -> Decimal: ...


#: signal ids -> the ts_ingest each was first recorded with (to tell a re-delivery from a duplicate).
SeenSignals = Callable[[Sequence[str]], Awaitable[dict[str, object]]]

__all__ = [
    "DeadLettered",
    "ExchangeConnector",
    "ExchangeOrder",
    "ExecutionState",
    "Fact",
    "InputRecord",
    "LagProbe",
    "OrderPlaced",
    "OrderRequest",
    "Outbox",
    "Outboxed",
    "Outcome",
    "PortfolioReader",
    "PositionChanged",
    "PositionStore",
    "PriceObserved",
    "Publisher",
    "SeenSignals",
    "SignalAnalyzed",
    "Sink",
    "Snapshot",
    "VerdictMade",
]


#: The input of a timer's outcomes (`Stage.on_clock`): no record to acknowledge.
CLOCK_RECORD = InputRecord(topic="(clock)", partition=-1, offset=-1, timestamp=None, key=None, value=b"")
