"""The transactional outbox in PostgreSQL (table `stage_outbox`, migration 0004): the `Outbox` port.

An entry is one outcome's events, encoded with the wire codec and length-prefixed, so producing
them again needs nothing but the bytes. Entries are written with the stage's rows
(`storage/tables/stage_outbox.py`)."""

from __future__ import annotations

import struct
from collections.abc import Sequence

from phoenix95.agents.ports import Outboxed
from phoenix95.domain import ids
from phoenix95.schemas.codec import Codec, model_for
from phoenix95.schemas.envelope import Event
from phoenix95.storage.postgres import Database

_LENGTH = struct.Struct(">I")


class PgOutbox:
    def __init__(self, database: Database, codec: Codec):
        self.database = database
        self.codec = codec

    def entry(self, stage: str, events: Sequence[Event]) -> Outboxed:
        payload = b"".join(_LENGTH.pack(len(data)) + data for data in map(self.codec.encode, events))
        # The same events (a re-delivered input computes the same ids) make the same entry.
        return Outboxed(ids.derive("outbox", stage, *(e.event_id for e in events)), stage, payload)

    def events(self, payload: bytes) -> list[Event]:
        events: list[Event] = []
        offset = 0
        while offset < len(payload):
            (size,) = _LENGTH.unpack_from(payload, offset)
            data = payload[offset + _LENGTH.size : offset + _LENGTH.size + size]
            offset += _LENGTH.size + size
            schema, _ = self.codec.writer_schema(data)
            events.append(self.codec.decode(data, model_for(schema.name)))
        return events

    async def pending(self, stage: str) -> list[tuple[str, list[Event]]]:
        rows = await self.database.fetch(
            "SELECT outbox_id::text, payload FROM stage_outbox WHERE stage = %s ORDER BY created_at, outbox_id",
            (stage,),
        )
        return [(outbox_id, self.events(bytes(payload))) for outbox_id, payload in rows]

    async def done(self, outbox_ids: Sequence[str]) -> None:
        if outbox_ids:
            await self.database.execute(
                "DELETE FROM stage_outbox WHERE outbox_id = ANY(%s::uuid[])", (list(outbox_ids),)
            )
