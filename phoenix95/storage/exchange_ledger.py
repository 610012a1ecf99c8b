"""What a live exchange reported, read back for the stages (PostgreSQL tables of migrations 0008/0009,
written by the exchange connector): the symbols' filters for risk (`SymbolRulesSource`), and the fills
of exchange-side protection and the funding payments for the positions stage (`ExchangeLedger`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from decimal import Decimal

from phoenix95.agents.ports import ClosedHolder, ExchangeCloseFill, ExchangeFunding, LedgerEntries
from phoenix95.domain.config import SymbolRules
from phoenix95.storage.postgres import Database, is_transient
from phoenix95.storage.retry import retry_transient


class PgExchangeLedger:
    def __init__(self, database: Database, exchange: str):
        self.database = database
        self.name = exchange

    async def symbol_rules(self) -> Mapping[str, SymbolRules]:
        rows = await self._fetch(
            "SELECT symbol, tick_size, step_size, min_qty, min_notional FROM exchange_symbol_filters"
            " WHERE exchange = %s",
            (self.name,),
        )
        return {
            symbol: SymbolRules(
                tick_size=Decimal(tick).normalize(),
                step_size=Decimal(step).normalize(),
                min_notional=Decimal(notional),
                min_qty=Decimal(min_qty).normalize(),
            )
            for symbol, tick, step, min_qty, notional in rows
        }

    async def entries(
        self, entry_client_order_ids: Sequence[str], symbols: Sequence[str], since: datetime
    ) -> LedgerEntries:
        close_fills: dict[str, list[ExchangeCloseFill]] = {}
        if entry_client_order_ids:
            rows = await self._fetch(
                """SELECT i.parent_client_order_id, i.kind, f.trade_id, f.price, f.quantity,
                          f.commission_usdt, f.traded_at
                     FROM exchange_intents i
                     JOIN exchange_fills f ON f.exchange = i.exchange AND f.client_order_id = i.client_order_id
                    WHERE i.exchange = %s AND i.parent_client_order_id = ANY(%s)
                      AND i.kind IN ('stop_loss', 'take_profit')
                    ORDER BY f.traded_at, f.trade_id""",
                (self.name, list(entry_client_order_ids)),
            )
            for parent, kind, trade_id, price, quantity, commission, traded_at in rows:
                close_fills.setdefault(parent, []).append(
                    ExchangeCloseFill(int(trade_id), kind, price, quantity, commission, traded_at)
                )
        funding: list[ExchangeFunding] = []
        if symbols is None or symbols:
            rows = await self._fetch(
                """SELECT i.tran_id, i.symbol, i.amount, i.at FROM exchange_income i
                    WHERE i.exchange = %s AND i.income_type = 'FUNDING_FEE' AND i.at >= %s
                      AND i.symbol IS NOT NULL AND (%s::text[] IS NULL OR i.symbol = ANY(%s::text[]))
                      AND NOT EXISTS (SELECT 1 FROM position_exchange_funding p
                                       WHERE p.exchange = i.exchange AND p.tran_id = i.tran_id)
                    ORDER BY i.at, i.tran_id""",
                (
                    self.name,
                    since,
                    None if symbols is None else list(symbols),
                    None if symbols is None else list(symbols),
                ),
            )
            funding = [ExchangeFunding(int(tran_id), symbol, amount, at) for tran_id, symbol, amount, at in rows]
        if funding:
            funding = await self._with_closed_holders(funding)
        return LedgerEntries(close_fills=close_fills, funding=funding)

    async def _with_closed_holders(self, funding: list[ExchangeFunding]) -> list[ExchangeFunding]:
        """Each payment with the positions of its symbol that were open at its funding time (the minute
        it was made: Binance reports it a moment after) and have closed since."""
        rows = await self._fetch(
            """SELECT position_id::text, symbol, quantity, opened_at, closed_at FROM positions
                WHERE status <> 'open' AND symbol = ANY(%s) AND closed_at >= %s AND opened_at <= %s
                ORDER BY opened_at, position_id""",
            (
                sorted({f.symbol for f in funding}),
                funding_time(min(f.time for f in funding)),
                max(f.time for f in funding),
            ),
        )
        out = []
        for payment in funding:
            at = funding_time(payment.time)
            holders = tuple(
                ClosedHolder(position_id, quantity)
                for position_id, symbol, quantity, opened_at, closed_at in rows
                if symbol == payment.symbol and opened_at <= payment.time and closed_at >= at
            )
            out.append(replace(payment, closed_holders=holders) if holders else payment)
        return out

    async def _fetch(self, query: str, params: Sequence[object]) -> list[tuple]:  # type: ignore[type-arg]
        return await retry_transient(
            lambda: self.database.fetch(query, params), what="exchange ledger", is_transient=is_transient
        )


def funding_time(reported: datetime) -> datetime:
    """The funding time of a payment reported at `reported`: its minute (funding is settled on the
    hour and reported within seconds), so a position closed just after it still held it."""
    return reported.replace(second=0, microsecond=0)
