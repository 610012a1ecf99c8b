"""The `positions` table: one row per position, updated as it is marked, funded and closed; a
closed position also completes its trade (`trades.trade_close_write`)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, TypedDict

from phoenix95.agents.ports import PositionChanged
from phoenix95.storage.postgres import PgWrite
from phoenix95.storage.tables.common import columns, row_params, table_upsert
from phoenix95.storage.tables.trades import trade_close_write


class PositionRow(TypedDict):
    position_id: str
    trade_id: str
    signal_id: str
    symbol: str
    side: str
    leverage: int
    margin_mode: str
    quantity: Decimal
    base_size: Decimal
    leveraged_size: Decimal
    margin_used: Decimal
    entry_price: Decimal
    current_price: Decimal
    mark_price: Decimal | None
    stop_loss_price: Decimal
    take_profit_price: Decimal
    liquidation_price: Decimal
    initial_margin: Decimal
    maintenance_margin: Decimal
    margin_ratio: Decimal
    unrealized_pnl: Decimal | int
    unrealized_pnl_percent: Decimal
    roe: Decimal
    realized_pnl: Decimal
    total_fees_paid: Decimal
    funding_paid: Decimal
    exit_price: Decimal | None
    status: str
    close_reason: str | None
    last_monitored_at: datetime
    distance_to_liquidation: Decimal | None
    risk_level: str
    max_drawdown: Decimal
    max_profit: Decimal
    auto_close_at: datetime | None
    forced_close_reason: str | None
    opened_at: datetime
    closed_at: datetime | None
    last_price_update: datetime


#: What a later state of an open position changes.
_UPDATED = (
    "current_price",
    "mark_price",
    "maintenance_margin",
    "margin_ratio",
    "unrealized_pnl",
    "unrealized_pnl_percent",
    "roe",
    "realized_pnl",
    "total_fees_paid",
    "funding_paid",
    "exit_price",
    "status",
    "close_reason",
    "last_monitored_at",
    "distance_to_liquidation",
    "risk_level",
    "max_drawdown",
    "max_profit",
    "forced_close_reason",
    "closed_at",
    "last_price_update",
)


_COLUMNS = columns(PositionRow)
_ID, _LAST_UPDATE, _STATUS = (_COLUMNS.index(c) for c in ("position_id", "last_price_update", "status"))


def _rank(row: tuple[Any, ...]) -> tuple[Any, bool]:
    """The latest state of a position in a batch: the later update, closed over open at one time."""
    return (row[_LAST_UPDATE], row[_STATUS] != "open")


POSITION = table_upsert(
    "position",
    "positions",
    PositionRow,
    constants={"exchange": "'paper'"},
    # Positions only move forward in event time, and a closed position never reopens.
    conflict="ON CONFLICT (position_id) DO UPDATE SET "
    + ", ".join(f"{column} = EXCLUDED.{column}" for column in _UPDATED)
    + " WHERE positions.status = 'open' AND positions.last_price_update <= EXCLUDED.last_price_update",
    #: Several states of one position in a batch: one INSERT .. SELECT may touch a row only once, so
    #: the COPY path keeps the latest.
    dedupe_key=_ID,
    dedupe_rank=_rank,
    order=50,
)


def position_row(fact: PositionChanged) -> PositionRow:
    e, pos = fact.event, fact.position
    return {
        "position_id": pos.position_id,
        "trade_id": pos.order_id,
        "signal_id": pos.signal_id,
        "symbol": pos.symbol,
        "side": pos.side,
        "leverage": pos.leverage,
        "margin_mode": pos.margin_mode,
        "quantity": pos.quantity,
        "base_size": pos.margin,
        "leveraged_size": pos.notional,
        "margin_used": pos.margin,
        "entry_price": pos.entry_price,
        "current_price": e.price,
        "mark_price": e.mark_price,
        "stop_loss_price": pos.stop_loss_price,
        "take_profit_price": pos.take_profit_price,
        "liquidation_price": pos.liquidation_price,
        "initial_margin": pos.margin,
        "maintenance_margin": e.maintenance_margin,
        "margin_ratio": e.margin_ratio,
        "unrealized_pnl": e.unrealized_pnl if pos.is_open else 0,
        "unrealized_pnl_percent": e.unrealized_pnl_percent,
        "roe": e.roe,
        "realized_pnl": pos.realized_pnl,
        "total_fees_paid": pos.entry_fee + pos.exit_fee,
        "funding_paid": pos.funding_paid,
        "exit_price": pos.exit_price,
        "status": pos.status,
        "close_reason": pos.close_reason,
        "last_monitored_at": e.ts_event,
        "distance_to_liquidation": e.distance_to_liquidation,
        "risk_level": e.risk_level,
        "max_drawdown": pos.min_roe,
        "max_profit": pos.max_roe,
        "auto_close_at": pos.auto_close_at,
        "forced_close_reason": pos.close_reason if pos.close_reason in ("expiry", "liquidation") else None,
        "opened_at": pos.opened_at,
        "closed_at": pos.closed_at,
        "last_price_update": pos.last_event_time,
    }


position_params = row_params(POSITION, position_row)


def position_writes(fact: PositionChanged) -> list[PgWrite]:
    writes = [PgWrite(POSITION, position_params(fact))]
    if not fact.position.is_open:
        writes.append(trade_close_write(fact.position))
    return writes
