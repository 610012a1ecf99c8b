"""The `orders` table: one row per order, filled or rejected, with its fill flattened into columns;
a filled opening order also writes its `trades` row, and every order its signal's status."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TypedDict

from phoenix95.agents.ports import OrderPlaced
from phoenix95.storage.postgres import PgWrite
from phoenix95.storage.tables.common import dumps, row_params, table_upsert
from phoenix95.storage.tables.signals import status_write
from phoenix95.storage.tables.trades import trade_write


class OrderRow(TypedDict):
    order_id: str
    client_order_id: str
    verdict_id: str
    signal_id: str
    symbol: str
    side: str
    position_side: str
    intent: str
    close_position_id: str | None
    order_type: str
    quantity: Decimal
    status: str
    reject_reason: str | None
    requested_price: Decimal
    leverage: int
    margin_mode: str
    exchange: str
    exchange_order_id: str | None
    fill_price: Decimal | None
    fill_quantity: Decimal | None
    fill_notional: Decimal | None
    fee: Decimal | None
    slippage_rate: Decimal | None
    reference_price: Decimal | None
    filled_at: datetime | None
    price_event_id: str | None
    submitted_at: datetime
    order_data: str


ORDER = table_upsert("order", "orders", OrderRow, order=30)


def order_row(fact: OrderPlaced) -> OrderRow:
    o = fact.order
    f = o.fill
    return {
        "order_id": o.order_id,
        "client_order_id": o.client_order_id,
        "verdict_id": o.verdict_id,
        "signal_id": o.signal_id,
        "symbol": o.symbol,
        "side": o.side,
        "position_side": o.position_side,
        "intent": o.intent,
        "close_position_id": o.close_position_id,
        "order_type": o.order_type,
        "quantity": o.quantity,
        "status": o.status,
        "reject_reason": o.reject_reason,
        "requested_price": o.requested_price,
        "leverage": o.leverage,
        "margin_mode": o.margin_mode,
        "exchange": o.exchange,
        "exchange_order_id": o.exchange_order_id,
        "fill_price": f.price if f else None,
        "fill_quantity": f.quantity if f else None,
        "fill_notional": f.notional if f else None,
        "fee": f.fee if f else None,
        "slippage_rate": f.slippage_rate if f else None,
        "reference_price": f.reference_price if f else None,
        "filled_at": f.filled_at if f else None,
        "price_event_id": f.price_event_id if f else None,
        "submitted_at": o.ts_event,
        "order_data": dumps(o.model_dump(mode="json")),
    }


order_params = row_params(ORDER, order_row)


def order_writes(fact: OrderPlaced) -> list[PgWrite]:
    o = fact.order
    writes = [PgWrite(ORDER, order_params(fact))]
    status = "executed" if o.status == "filled" else "rejected"
    writes.append(
        status_write(
            o.signal_id, status, {"order_id": o.order_id, "status": o.status, "reject_reason": o.reject_reason}
        )
    )
    if o.fill is not None and o.intent == "open":
        writes.append(trade_write(fact))
    return writes
