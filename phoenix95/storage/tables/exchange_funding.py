"""The `position_exchange_funding` table: an exchange funding payment applied to a position (once)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TypedDict

from phoenix95.agents.ports import ExchangeFundingApplied
from phoenix95.storage.postgres import PgWrite
from phoenix95.storage.tables.common import params, table_upsert


class ExchangeFundingRow(TypedDict):
    position_id: str
    exchange: str
    tran_id: int
    amount: Decimal
    at: datetime


EXCHANGE_FUNDING = table_upsert("exchange_funding", "position_exchange_funding", ExchangeFundingRow, order=55)
_params = params(EXCHANGE_FUNDING)


def exchange_funding_writes(fact: ExchangeFundingApplied) -> list[PgWrite]:
    row: ExchangeFundingRow = {
        "position_id": fact.position_id,
        "exchange": fact.exchange,
        "tran_id": fact.tran_id,
        "amount": fact.amount,
        "at": fact.at,
    }
    return [PgWrite(EXCHANGE_FUNDING, _params(row))]
