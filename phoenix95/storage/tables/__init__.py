"""Facts -> PostgreSQL writes, one module per table. Every write is an upsert keyed by an event id,
so writing a batch twice leaves one row per event. Parameters are always bound, never formatted
into SQL.

A table module declares its row type (a TypedDict: the columns, in order), builds each row as a
`{column: value}` mapping of that type, and derives its statement's column list from the row type
(`common.table_upsert`); the mapping becomes the parameters in column order (`common.params`).

signals.py        signals (+ the execution-status update)
risk_verdicts.py  risk_verdicts
orders.py         orders
trades.py         trades (+ the update when the position closes)
positions.py      positions
dead_letters.py   dead_letters
stage_outbox.py   stage_outbox (the entries; storage/outbox.py reads and deletes them)
exchange_funding.py position_exchange_funding (a live exchange's funding applied to a position)
"""

from __future__ import annotations

from phoenix95.agents.ports import (
    DeadLettered,
    ExchangeFundingApplied,
    Fact,
    OrderPlaced,
    Outboxed,
    PositionChanged,
    PriceObserved,
    SignalAnalyzed,
    VerdictMade,
)
from phoenix95.storage.postgres import PgWrite
from phoenix95.storage.tables.dead_letters import dead_letter_writes
from phoenix95.storage.tables.exchange_funding import exchange_funding_writes
from phoenix95.storage.tables.orders import order_writes
from phoenix95.storage.tables.positions import position_writes
from phoenix95.storage.tables.risk_verdicts import verdict_writes
from phoenix95.storage.tables.signals import signal_writes
from phoenix95.storage.tables.stage_outbox import outbox_write


def writes_for(fact: Fact) -> list[PgWrite]:
    if isinstance(fact, SignalAnalyzed):
        return signal_writes(fact)
    if isinstance(fact, VerdictMade):
        return verdict_writes(fact)
    if isinstance(fact, OrderPlaced):
        return order_writes(fact)
    if isinstance(fact, PositionChanged):
        return position_writes(fact)
    if isinstance(fact, DeadLettered):
        return dead_letter_writes(fact)
    if isinstance(fact, PriceObserved):
        return []
    if isinstance(fact, Outboxed):
        return [outbox_write(fact)]
    if isinstance(fact, ExchangeFundingApplied):
        return exchange_funding_writes(fact)
    raise TypeError(f"no PostgreSQL mapping for {type(fact).__name__}")
