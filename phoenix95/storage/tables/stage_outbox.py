"""The `stage_outbox` table: one row per outbox entry (see `storage/outbox.py`, which reads and
deletes them)."""

from __future__ import annotations

from typing import TypedDict

from phoenix95.agents.ports import Outboxed
from phoenix95.storage.postgres import PgWrite
from phoenix95.storage.tables.common import params, table_upsert


class OutboxRow(TypedDict):
    outbox_id: str
    stage: str
    payload: bytes


OUTBOX = table_upsert("outbox", "stage_outbox", OutboxRow, order=95)
_outbox_params = params(OUTBOX)


def outbox_write(fact: Outboxed) -> PgWrite:
    row: OutboxRow = {"outbox_id": fact.outbox_id, "stage": fact.stage, "payload": fact.payload}
    return PgWrite(OUTBOX, _outbox_params(row))
