"""Builders with defaults for test data."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from phoenix95.connectors.market_data import price_event
from phoenix95.schemas.messages import MarketPrice, Signal
from phoenix95.schemas.signal_input import build_signal

T0 = datetime(2021, 11, 15, 0, 0, tzinfo=UTC)
_counter = itertools.count()


def signal(
    *,
    symbol: str = "XRPUSDT",
    action: str = "buy",
    price: str | Decimal = "1.19",
    confidence: str = "0.9",
    at: datetime | None = None,
    signal_id: str | None = None,
    strategy: str | None = None,
    **fields: Any,
) -> Signal:
    payload: dict[str, Any] = {
        "symbol": symbol,
        "action": action,
        "price": str(price),
        "confidence": confidence,
        "strategy": strategy or f"test-{next(_counter)}",
        "timeframe": "5m",
        "source": "custom",
        "source_timestamp": (at or T0).isoformat(),
        **fields,
    }
    return build_signal(payload, producer="tests", signal_id=signal_id or str(uuid.uuid4()))


def price(
    *,
    symbol: str = "XRPUSDT",
    value: str | Decimal = "1.19",
    at: datetime | None = None,
    high: str | Decimal | None = None,
    low: str | Decimal | None = None,
    namespace: str = "",
    **fields: Any,
) -> MarketPrice:
    value = Decimal(str(value))
    for key in ("volume", "mark_price", "funding_rate"):
        if fields.get(key) is not None:
            fields[key] = Decimal(str(fields[key]))
    return price_event(
        symbol=symbol,
        time=at or T0,
        price=value,
        source=fields.pop("source", "test"),
        interval="5m",
        high=Decimal(str(high)) if high is not None else value,
        low=Decimal(str(low)) if low is not None else value,
        namespace=namespace,
        **fields,
    )


def price_path(
    values: list[str],
    *,
    symbol: str = "XRPUSDT",
    start: datetime = T0,
    step: timedelta = timedelta(minutes=5),
    namespace: str = "",
) -> list[MarketPrice]:
    return [price(symbol=symbol, value=v, at=start + step * (i + 1), namespace=namespace) for i, v in enumerate(values)]
