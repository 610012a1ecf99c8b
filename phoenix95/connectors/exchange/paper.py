"""The paper exchange: fills market orders with the domain's slippage and fee model and keeps its
own order book in PostgreSQL (`paper_exchange_orders`), so a restarted worker finds what it placed."""

from __future__ import annotations

from collections.abc import Sequence

from phoenix95.connectors.exchange.base import ExchangeOrder, OrderRequest
from phoenix95.domain import ids
from phoenix95.domain.config import TradingConfig
from phoenix95.domain.execution import fill_market_order
from phoenix95.storage.postgres import Database, is_transient
from phoenix95.storage.retry import retry_transient

_COLUMNS = (
    "client_order_id, exchange_order_id, symbol, side, quantity, status, fill_price, fee, filled_at, slippage_rate,"
    " reference_price"
)


class PaperExchange:
    name = "paper"

    def __init__(self, database: Database, config: TradingConfig):
        self.database = database
        self.config = config

    async def query(self, client_order_ids: Sequence[str]) -> dict[str, ExchangeOrder]:
        if not client_order_ids:
            return {}
        rows = await self.database.fetch(
            f"SELECT {_COLUMNS} FROM paper_exchange_orders WHERE client_order_id = ANY(%s)", (list(client_order_ids),)
        )
        return {row[0]: _order(row) for row in rows}

    async def submit(self, requests: Sequence[OrderRequest]) -> dict[str, ExchangeOrder]:
        if not requests:
            return {}
        rows = []
        for request in requests:
            config = self.config.for_symbol(request.symbol)
            fill = fill_market_order(
                side=request.side,
                quantity=request.quantity,
                reference_price=request.reference_price,
                time=request.time,
                config=config,
                tick_size=config.rules(request.symbol).tick_size,
                volume=request.volume,
                price_event_id=request.price_event_id,
            )
            rows.append(
                (
                    request.client_order_id,
                    "paper-" + ids.derive("paper-order", request.client_order_id),
                    request.symbol,
                    request.side,
                    request.quantity,
                    "FILLED",
                    fill.price,
                    fill.fee,
                    fill.time,
                    fill.slippage_rate,
                    fill.reference_price,
                )
            )

        async def insert() -> None:
            async with self.database.pool.connection() as connection, connection.cursor() as cursor:
                await cursor.executemany(
                    f"INSERT INTO paper_exchange_orders ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (client_order_id) DO NOTHING",
                    rows,
                )

        await retry_transient(insert, what="paper exchange submit", is_transient=is_transient)
        return await self.query([request.client_order_id for request in requests])

    async def cancel(self, client_order_id: str) -> ExchangeOrder | None:
        # Market orders fill at once on the paper exchange: there is never anything open to cancel.
        found = await self.query([client_order_id])
        return found.get(client_order_id)

    async def cancel_all(self, symbol: str) -> int:
        return 0


def _order(row: tuple) -> ExchangeOrder:  # type: ignore[type-arg]
    return ExchangeOrder(
        client_order_id=row[0],
        exchange_order_id=row[1],
        symbol=row[2],
        side=row[3],
        quantity=row[4],
        status=row[5],
        fill_price=row[6],
        fee=row[7],
        filled_at=row[8],
        slippage_rate=row[9],
        reference_price=row[10],
    )
