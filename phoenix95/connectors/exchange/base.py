"""The exchange connector contract.

Idempotency lives in the client order id: it is derived from the verdict, so a retried submission
uses the same id. Binance keeps a `newClientOrderId` unique only among *open* orders and a filled
order's id can be reused, so the id alone does not make a retry safe: callers must `query` the id
first and only `submit` what the exchange does not know (query-before-retry). A connector's `submit`
of an id it already knows returns that order, never a second one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal, Protocol

from phoenix95.domain.values import OrderSide

ExchangeStatus = Literal["NEW", "FILLED", "REJECTED", "CANCELED", "UNKNOWN"]


@dataclass(frozen=True)
class OrderRequest:
    client_order_id: str
    symbol: str
    side: OrderSide
    quantity: Decimal
    reduce_only: bool
    #: Paper only: the market price event the fill is based on.
    reference_price: Decimal
    time: datetime
    volume: Decimal | None = None
    price_event_id: str = ""
    #: Live connectors: the symbol's setup on first use (ISOLATED margin, the verdict's leverage) and the
    #: exchange-side protection placed after an entry fills. The paper exchange ignores them.
    leverage: int | None = None
    margin_mode: str | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    #: The entry price the stop-loss and take-profit were planned from: they are re-anchored on the fill.
    planned_entry: Decimal | None = None
    #: A close: the client order id of the entry that opened the position, whose exchange-side
    #: protection is cancelled once the close fills (whether or not other positions remain).
    closes_entry: str | None = None


@dataclass(frozen=True)
class ExchangeOrder:
    client_order_id: str
    exchange_order_id: str
    symbol: str
    side: OrderSide
    quantity: Decimal
    status: ExchangeStatus
    fill_price: Decimal | None = None
    fee: Decimal | None = None
    filled_at: datetime | None = None
    slippage_rate: Decimal | None = None
    reference_price: Decimal | None = None
    #: Why the exchange refused it (REJECTED), or why its fate is not known yet (UNKNOWN).
    reason: str | None = None
    #: A live exchange's trade ids of the fill (its fee is their commission, in USDT).
    trade_ids: tuple[str, ...] = ()


class ExchangeConnector(Protocol):
    name: str

    async def query(self, client_order_ids: Sequence[str]) -> dict[str, ExchangeOrder]:
        """Orders the exchange knows, by client order id."""
        ...

    async def submit(self, requests: Sequence[OrderRequest]) -> dict[str, ExchangeOrder]:
        """Place market orders. An id the exchange already knows returns the existing order."""
        ...

    async def cancel(self, client_order_id: str) -> ExchangeOrder | None: ...

    async def cancel_all(self, symbol: str) -> int: ...
