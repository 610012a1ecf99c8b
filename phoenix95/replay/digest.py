"""A digest of what a run did: sha256 over a canonical encoding of its orders, fills and position
closes. Equal digests mean the same trades, to the last decimal and microsecond."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from phoenix95.domain.positions import Position
from phoenix95.domain.protections import Trip
from phoenix95.schemas.messages import Order


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, Decimal):
        normalized = value.normalize()
        return format(normalized, "f") if normalized != 0 else "0"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def order_line(
    order_id: str,
    client_order_id: str,
    symbol: str,
    side: str,
    intent: str,
    quantity: Decimal,
    status: str,
    fill_price: Decimal | None,
    fill_quantity: Decimal | None,
    fee: Decimal | None,
    filled_at: datetime | None,
) -> str:
    return "|".join(
        _text(v)
        for v in (
            "order",
            order_id,
            client_order_id,
            symbol,
            side,
            intent,
            quantity,
            status,
            fill_price,
            fill_quantity,
            fee,
            filled_at,
        )
    )


def close_line(
    position_id: str,
    status: str,
    close_reason: str | None,
    exit_price: Decimal | None,
    closed_at: datetime | None,
    realized_pnl: Decimal,
) -> str:
    return "|".join(_text(v) for v in ("close", position_id, status, close_reason, exit_price, closed_at, realized_pnl))


def trip_line(trip: Trip) -> str:
    """A protection trip (a replay applies the protections: docs/compliance.md)."""
    subject = trip.lock.symbol if trip.lock is not None else "-"
    until = trip.lock.until if trip.lock is not None else None
    return "|".join(_text(v) for v in ("trip", trip.reason, trip.at, subject, until, trip.halt))


def lines_of(orders: Iterable[Order], closed: Iterable[Position]) -> list[str]:
    lines = []
    for o in orders:
        f = o.fill
        lines.append(
            order_line(
                o.order_id,
                o.client_order_id,
                o.symbol,
                o.side,
                o.intent,
                o.quantity,
                o.status,
                f.price if f else None,
                f.quantity if f else None,
                f.fee if f else None,
                f.filled_at if f else None,
            )
        )
    for p in closed:
        lines.append(close_line(p.position_id, p.status, p.close_reason, p.exit_price, p.closed_at, p.realized_pnl))
    return lines


def digest(lines: Iterable[str]) -> str:
    hasher = hashlib.sha256()
    for line in sorted(lines):
        hasher.update(line.encode())
        hasher.update(b"\n")
    return hasher.hexdigest()
