"""The `position_exchange_funding` table: an exchange funding payment applied to a position (once).

A payment reported after its position closed is applied by the write itself: the row is inserted
unless there, and only when it was, the closed position's funding and realized PnL (and its trade's)
take it, in one statement, so a re-delivery or a second writer changes nothing."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TypedDict

from phoenix95.agents.ports import ExchangeFundingApplied
from phoenix95.storage.postgres import PgWrite, Statement
from phoenix95.storage.tables.common import params, table_upsert


class ExchangeFundingRow(TypedDict):
    position_id: str
    exchange: str
    tran_id: int
    amount: Decimal
    at: datetime


EXCHANGE_FUNDING = table_upsert("exchange_funding", "position_exchange_funding", ExchangeFundingRow, order=55)
_params = params(EXCHANGE_FUNDING)


#: After the trade's close (TRADE_CLOSE, order 60) of a position closed in the same batch.
FUNDING_AFTER_CLOSE = Statement(
    "exchange_funding_after_close",
    """WITH applied AS (
           INSERT INTO position_exchange_funding (position_id, exchange, tran_id, amount, at)
           VALUES (%(position_id)s, %(exchange)s, %(tran_id)s, %(amount)s, %(at)s)
           ON CONFLICT DO NOTHING RETURNING position_id, amount),
       closed AS (
           UPDATE positions p SET funding_paid = p.funding_paid - a.amount, realized_pnl = p.realized_pnl + a.amount
             FROM applied a WHERE p.position_id = a.position_id AND p.status <> 'open'
           RETURNING p.trade_id, p.realized_pnl, p.funding_paid, p.initial_margin)
       UPDATE trades t SET realized_pnl = c.realized_pnl, total_pnl = c.realized_pnl,
              funding_fee_amount = c.funding_paid,
              roe_percent = CASE WHEN c.initial_margin > 0 THEN c.realized_pnl / c.initial_margin * 100 END
         FROM closed c WHERE t.trade_id = c.trade_id""",
    order=65,
)


def exchange_funding_writes(fact: ExchangeFundingApplied) -> list[PgWrite]:
    if fact.after_close:
        return [
            PgWrite(
                FUNDING_AFTER_CLOSE,
                {
                    "position_id": fact.position_id,
                    "exchange": fact.exchange,
                    "tran_id": fact.tran_id,
                    "amount": fact.amount,
                    "at": fact.at,
                },
            )
        ]
    row: ExchangeFundingRow = {
        "position_id": fact.position_id,
        "exchange": fact.exchange,
        "tran_id": fact.tran_id,
        "amount": fact.amount,
        "at": fact.at,
    }
    return [PgWrite(EXCHANGE_FUNDING, _params(row))]
