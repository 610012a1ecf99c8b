"""The `dead_letters` table: every input a stage could not process, with its original bytes."""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict

from phoenix95.agents.ports import DeadLettered
from phoenix95.storage.postgres import PgWrite
from phoenix95.storage.tables.common import dumps, row_params, table_upsert


class DeadLetterRow(TypedDict):
    event_id: str
    correlation_id: str
    stage: str
    reason: str
    error: str
    source_topic: str
    source_partition: int
    source_offset: int
    source_timestamp: datetime | None
    original_key: bytes | None
    original_value: bytes
    original_headers: str
    dead_at: datetime


DEAD_LETTER = table_upsert("dead_letter", "dead_letters", DeadLetterRow, order=5)


def dead_letter_row(fact: DeadLettered) -> DeadLetterRow:
    d = fact.dead_letter
    headers = [{"key": h.key, "value": h.value.hex() if h.value is not None else None} for h in d.original_headers]
    return {
        "event_id": d.event_id,
        "correlation_id": d.correlation_id,
        "stage": d.stage,
        "reason": d.reason,
        "error": d.error,
        "source_topic": d.source_topic,
        "source_partition": d.source_partition,
        "source_offset": d.source_offset,
        "source_timestamp": d.source_timestamp,
        "original_key": d.original_key,
        "original_value": d.original_value,
        "original_headers": dumps(headers),
        "dead_at": d.ts_event,
    }


dead_letter_params = row_params(DEAD_LETTER, dead_letter_row)


def dead_letter_writes(fact: DeadLettered) -> list[PgWrite]:
    return [PgWrite(DEAD_LETTER, dead_letter_params(fact))]
