"""Order intents in PostgreSQL (migration 0008): written *before* an order is sent, so the client
order id is claimed once and a restarted worker asks the exchange about it instead of sending again."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from phoenix95.storage.postgres import Database, is_transient
from phoenix95.storage.retry import retry_transient

#: Statuses whose fate is not settled: asked for at the exchange.
UNSETTLED = ("SENT", "UNKNOWN")
#: Statuses of orders resting at the exchange (protection).
RESTING = ("NEW",)

_COLUMNS = (
    "client_order_id, kind, parent_client_order_id, exchange, symbol, side, quantity, reduce_only, trigger_price,"
    " reference_price, status, exchange_order_id, fill_price, executed_qty, fee, filled_at, reject_code,"
    " reject_reason, created_at, stop_loss, take_profit, planned_entry, trade_ids"
)


@dataclass(frozen=True)
class Intent:
    client_order_id: str
    kind: str  # entry | exit | stop_loss | take_profit
    exchange: str
    symbol: str
    side: str
    quantity: Decimal
    reduce_only: bool
    status: str = "SENT"
    parent_client_order_id: str | None = None
    trigger_price: Decimal | None = None
    reference_price: Decimal | None = None
    exchange_order_id: str | None = None
    fill_price: Decimal | None = None
    executed_qty: Decimal | None = None
    fee: Decimal | None = None
    filled_at: datetime | None = None
    reject_code: int | None = None
    reject_reason: str | None = None
    created_at: datetime | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    planned_entry: Decimal | None = None
    trade_ids: tuple[str, ...] = ()

    def with_(self, **changes: Any) -> Intent:
        return replace(self, **changes)


def _intent(row: Sequence[Any]) -> Intent:
    return Intent(
        client_order_id=row[0],
        kind=row[1],
        parent_client_order_id=row[2],
        exchange=row[3],
        symbol=row[4],
        side=row[5],
        quantity=row[6],
        reduce_only=row[7],
        trigger_price=row[8],
        reference_price=row[9],
        status=row[10],
        exchange_order_id=row[11],
        fill_price=row[12],
        executed_qty=row[13],
        fee=row[14],
        filled_at=row[15],
        reject_code=row[16],
        reject_reason=row[17],
        created_at=row[18],
        stop_loss=row[19],
        take_profit=row[20],
        planned_entry=row[21],
        trade_ids=tuple(row[22] or ()),
    )


class IntentStore:
    def __init__(self, database: Database):
        self.database = database

    async def _fetch(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return await retry_transient(
            lambda: self.database.fetch(query, params), what="exchange intents", is_transient=is_transient
        )

    async def claim(self, intent: Intent) -> Intent | None:
        """Write the intent (status SENT) unless its client order id exists: returns None when this call
        wrote it (the caller may send it, once), else the intent already there (never send it again)."""
        rows = await self._fetch(
            "INSERT INTO exchange_intents (client_order_id, kind, parent_client_order_id, exchange, symbol, side,"
            " quantity, reduce_only, trigger_price, reference_price, status, stop_loss, take_profit, planned_entry)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (client_order_id) DO NOTHING"
            " RETURNING client_order_id",
            (
                intent.client_order_id,
                intent.kind,
                intent.parent_client_order_id,
                intent.exchange,
                intent.symbol,
                intent.side,
                intent.quantity,
                intent.reduce_only,
                intent.trigger_price,
                intent.reference_price,
                intent.status,
                intent.stop_loss,
                intent.take_profit,
                intent.planned_entry,
            ),
        )
        if rows:
            return None
        found = await self.get([intent.client_order_id])
        return found[intent.client_order_id]

    async def claim_many(self, intents: Sequence[Intent]) -> dict[str, Intent]:
        """`claim` for several intents in one statement: returns the intents already there (never send
        those again), by client order id; the others were written by this call."""
        if not intents:
            return {}
        rows = await self._fetch(
            "INSERT INTO exchange_intents (client_order_id, kind, parent_client_order_id, exchange, symbol, side,"
            " quantity, reduce_only, trigger_price, reference_price, status, stop_loss, take_profit, planned_entry)"
            " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],"
            " %s::numeric[], %s::boolean[], %s::numeric[], %s::numeric[], %s::text[], %s::numeric[], %s::numeric[],"
            " %s::numeric[]) ON CONFLICT (client_order_id) DO NOTHING RETURNING client_order_id",
            [
                [getattr(intent, name) for intent in intents]
                for name in (
                    "client_order_id",
                    "kind",
                    "parent_client_order_id",
                    "exchange",
                    "symbol",
                    "side",
                    "quantity",
                    "reduce_only",
                    "trigger_price",
                    "reference_price",
                    "status",
                    "stop_loss",
                    "take_profit",
                    "planned_entry",
                )
            ],
        )
        written = {row[0] for row in rows}
        others = [intent.client_order_id for intent in intents if intent.client_order_id not in written]
        return await self.get(others) if others else {}

    async def get(self, client_order_ids: Sequence[str]) -> dict[str, Intent]:
        if not client_order_ids:
            return {}
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM exchange_intents WHERE client_order_id = ANY(%s)", (list(client_order_ids),)
        )
        return {row[0]: _intent(row) for row in rows}

    async def save(self, intent: Intent) -> Intent:
        await self._fetch(
            "UPDATE exchange_intents SET status = %s, exchange_order_id = %s, fill_price = %s, executed_qty = %s,"
            " fee = %s, filled_at = %s, reject_code = %s, reject_reason = %s, quantity = %s, trigger_price = %s,"
            " trade_ids = %s, updated_at = clock_timestamp() WHERE client_order_id = %s RETURNING client_order_id",
            (
                intent.status,
                intent.exchange_order_id,
                intent.fill_price,
                intent.executed_qty,
                intent.fee,
                intent.filled_at,
                intent.reject_code,
                intent.reject_reason,
                intent.quantity,
                intent.trigger_price,
                list(intent.trade_ids) or None,
                intent.client_order_id,
            ),
        )
        return intent

    async def save_many(self, intents: Sequence[Intent]) -> None:
        """`save` for several intents in one statement (and so in one transaction)."""
        if len(intents) == 1:
            await self.save(intents[0])
            return
        if not intents:
            return
        await self._fetch(
            "UPDATE exchange_intents AS i SET status = v.status, exchange_order_id = v.exchange_order_id,"
            " fill_price = v.fill_price, executed_qty = v.executed_qty, fee = v.fee, filled_at = v.filled_at,"
            " reject_code = v.reject_code, reject_reason = v.reject_reason, quantity = v.quantity,"
            " trigger_price = v.trigger_price, trade_ids = string_to_array(v.trade_ids, ','),"
            " updated_at = clock_timestamp()"
            " FROM unnest(%s::text[], %s::text[], %s::text[], %s::numeric[], %s::numeric[], %s::numeric[],"
            " %s::timestamptz[], %s::integer[], %s::text[], %s::numeric[], %s::numeric[], %s::text[])"
            " AS v(client_order_id, status, exchange_order_id, fill_price, executed_qty, fee, filled_at, reject_code,"
            " reject_reason, quantity, trigger_price, trade_ids)"
            " WHERE i.client_order_id = v.client_order_id RETURNING i.client_order_id",
            [
                *(
                    [getattr(intent, name) for intent in intents]
                    for name in (
                        "client_order_id",
                        "status",
                        "exchange_order_id",
                        "fill_price",
                        "executed_qty",
                        "fee",
                        "filled_at",
                        "reject_code",
                        "reject_reason",
                        "quantity",
                        "trigger_price",
                    )
                ),
                [",".join(intent.trade_ids) or None for intent in intents],
            ],
        )

    async def with_status(
        self, statuses: Sequence[str], kinds: Sequence[str] | None = None, *, created_after: datetime | None = None
    ) -> list[Intent]:
        query = f"SELECT {_COLUMNS} FROM exchange_intents WHERE status = ANY(%s)"
        params: list[Any] = [list(statuses)]
        if kinds is not None:
            query += " AND kind = ANY(%s)"
            params.append(list(kinds))
        if created_after is not None:
            query += " AND created_at >= %s"
            params.append(created_after)
        return [_intent(row) for row in await self._fetch(query + " ORDER BY created_at", params)]

    async def children(self, parent_client_order_id: str) -> list[Intent]:
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM exchange_intents WHERE parent_client_order_id = %s ORDER BY kind",
            (parent_client_order_id,),
        )
        return [_intent(row) for row in rows]

    async def protection_for(self, symbol: str, statuses: Sequence[str] = RESTING) -> list[Intent]:
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM exchange_intents WHERE symbol = %s AND kind IN ('stop_loss', 'take_profit')"
            " AND status = ANY(%s)",
            (symbol, list(statuses)),
        )
        return [_intent(row) for row in rows]

    async def record_fills(self, exchange: str, trades: Sequence[dict[str, Any]], *, adopted: bool) -> int:
        """Fills as the exchange reported them (fees included, and the fee in USDT where known: see
        `BinanceExchange.record_fills`); a trade id already recorded is kept (only a USDT fee it lacked
        is filled in). Returns how many were new."""
        from phoenix95.connectors.exchange.binance_parse import trade_row

        rows: list[tuple[Any, ...]] = []
        for trade in trades:
            row = trade_row(exchange, trade, adopted) if isinstance(trade, dict) else None
            if row is not None:
                rows.append(row)
        if not rows:
            return 0
        written = await self._fetch(
            "INSERT INTO exchange_fills AS f (exchange, symbol, trade_id, exchange_order_id, client_order_id, side,"
            " price, quantity, commission, commission_asset, realized_pnl, traded_at, adopted, commission_usdt)"
            " SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::text[], %s::text[], %s::text[],"
            " %s::numeric[], %s::numeric[], %s::numeric[], %s::text[], %s::numeric[], %s::timestamptz[],"
            " %s::boolean[], %s::numeric[])"
            " ON CONFLICT (exchange, symbol, trade_id) DO UPDATE SET commission_usdt = EXCLUDED.commission_usdt"
            " WHERE f.commission_usdt IS NULL AND EXCLUDED.commission_usdt IS NOT NULL"
            " RETURNING (xmax = 0)",
            [list(column) for column in zip(*rows, strict=True)],
        )
        return sum(1 for (inserted,) in written if inserted)

    async def record_income(self, exchange: str, rows: Sequence[tuple[Any, ...]]) -> int:
        new = 0
        for row in rows:
            inserted = await self._fetch(
                "INSERT INTO exchange_income (exchange, tran_id, symbol, income_type, amount, asset, at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING tran_id",
                (exchange, *row),
            )
            new += len(inserted)
        return new

    async def tag_fills(self, exchange: str, symbol: str, exchange_order_id: str, client_order_id: str) -> None:
        """Name the order a set of fills belongs to (a protection order's fills carry the id of the market
        order it became, not its own client id)."""
        await self._fetch(
            "UPDATE exchange_fills SET client_order_id = %s WHERE exchange = %s AND symbol = %s"
            " AND exchange_order_id = %s RETURNING trade_id",
            (client_order_id, exchange, symbol, exchange_order_id),
        )

    async def record_filters(self, exchange: str, filters: Sequence[Any]) -> None:
        """The symbols' exchangeInfo filters, for risk (migration 0009)."""
        rows = [(exchange, f.symbol, f.tick_size, f.step_size, f.min_qty, f.min_notional) for f in filters]
        if not rows:
            return

        async def write() -> None:
            async with self.database.pool.connection() as connection, connection.cursor() as cursor:
                await cursor.executemany(
                    "INSERT INTO exchange_symbol_filters (exchange, symbol, tick_size, step_size, min_qty, min_notional)"
                    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (exchange, symbol) DO UPDATE SET"
                    " tick_size = EXCLUDED.tick_size, step_size = EXCLUDED.step_size, min_qty = EXCLUDED.min_qty,"
                    " min_notional = EXCLUDED.min_notional, updated_at = clock_timestamp()",
                    rows,
                )

        await retry_transient(write, what="exchange filters", is_transient=is_transient)

    async def known_trade_ids(self, exchange: str, symbol: str) -> set[int]:
        rows = await self._fetch(
            "SELECT trade_id FROM exchange_fills WHERE exchange = %s AND symbol = %s", (exchange, symbol)
        )
        return {int(row[0]) for row in rows}

    async def converted_fees(self, exchange: str, keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], Decimal]:
        """Of these (symbol, trade id), those recorded with their commission in USDT already, with it."""
        if not keys:
            return {}
        rows = await self._fetch(
            "SELECT f.symbol, f.trade_id, f.commission_usdt FROM exchange_fills f"
            " JOIN unnest(%s::text[], %s::bigint[]) AS k(symbol, trade_id)"
            " ON f.symbol = k.symbol AND f.trade_id = k.trade_id"
            " WHERE f.exchange = %s AND f.commission_usdt IS NOT NULL",
            ([k[0] for k in keys], [k[1] for k in keys], exchange),
        )
        return {(str(symbol), int(trade_id)): Decimal(value) for symbol, trade_id, value in rows}

    async def unconverted_fills(self, exchange: str) -> list[tuple[str, int, Decimal, str, datetime]]:
        """Fills whose commission (paid in another asset) is not known in USDT yet:
        (symbol, trade id, commission, asset, traded at), oldest first."""
        rows = await self._fetch(
            "SELECT symbol, trade_id, commission, commission_asset, traded_at FROM exchange_fills"
            " WHERE exchange = %s AND commission_usdt IS NULL ORDER BY traded_at, trade_id",
            (exchange,),
        )
        return [(str(r[0]), int(r[1]), Decimal(r[2]), str(r[3]), r[4]) for r in rows]

    async def set_commission_usdt(self, exchange: str, symbol: str, trade_id: int, value: Decimal) -> bool:
        """Fill in a fill's commission in USDT (once: only while unknown)."""
        rows = await self._fetch(
            "UPDATE exchange_fills SET commission_usdt = %s WHERE exchange = %s AND symbol = %s AND trade_id = %s"
            " AND commission_usdt IS NULL RETURNING trade_id",
            (value, exchange, symbol, trade_id),
        )
        return bool(rows)

    async def client_ids_of_orders(self, exchange_order_ids: Sequence[str]) -> dict[str, str]:
        if not exchange_order_ids:
            return {}
        rows = await self._fetch(
            "SELECT exchange_order_id, client_order_id FROM exchange_intents WHERE exchange_order_id = ANY(%s)",
            (list(exchange_order_ids),),
        )
        return {row[0]: row[1] for row in rows}
