"""The `notifications` outbox table (migration 0006): rows written by the stage, handed to (or taken
by) the sender, sent and marked by it, listed and retried by `p95 notify`."""

from __future__ import annotations

import contextvars
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from phoenix95.domain import ids
from phoenix95.notify.events import Draft
from phoenix95.storage.postgres import Database, PgWrite, Statement, upsert

#: The row's columns and their array types (the parameters of `row_write`, in order; a payload dict
#: follows them, for the sender).
_ROW_COLUMNS = (
    ("notification_id", "uuid"),
    ("event_id", "text"),
    ("channel", "text"),
    ("event_type", "text"),
    ("severity", "text"),
    ("silent", "bool"),
    ("position_id", "text"),
    ("signal_id", "text"),
    ("subject", "text"),
    ("payload", "jsonb"),
    ("event_time", "timestamptz"),
)
#: One INSERT per batch (the columns as arrays, sent in binary: psycopg's text form of an array
#: escapes every element through a regular expression, 85 us a row). Only the rows it inserts come
#: back: a re-delivered event's rows are there already, and only new rows may be handed to the sender.
_INSERT = (
    f"INSERT INTO notifications ({', '.join(name for name, _ in _ROW_COLUMNS)}, lease_until) "
    f"SELECT *, CASE WHEN %s::float8 > 0 THEN clock_timestamp() + make_interval(secs => %s::float8) END "
    f"FROM unnest({', '.join(f'%b::{kind}[]' for _, kind in _ROW_COLUMNS)}) "
    "ON CONFLICT DO NOTHING RETURNING notification_id::text"
)


@dataclass
class Handover:
    """New rows of one sink write, leased (for `lease_s`) to the sender of this worker at insert, so it
    sends them from memory instead of claiming them back from the table; set while the sink writes
    (`HANDOVER`), filled by the insert."""

    lease_s: float
    rows: dict[str, Row] = field(default_factory=dict)


HANDOVER: contextvars.ContextVar[Handover | None] = contextvars.ContextVar("p95_notify_handover", default=None)


async def _insert_rows(cursor: psycopg.AsyncCursor[Any], writes: list[PgWrite]) -> None:
    handover = HANDOVER.get()
    lease_s = handover.lease_s if handover is not None else 0.0
    rows = [write.params for write in writes]
    columns = [[row[index] for row in rows] for index in range(len(_ROW_COLUMNS))]
    await cursor.execute(_INSERT, (lease_s, lease_s, *columns))
    inserted = [notification_id for (notification_id,) in await cursor.fetchall()]
    if handover is not None and inserted:
        by_id = {row[0]: row for row in rows}
        now = datetime.now(UTC)
        for notification_id in inserted:
            row = by_id[notification_id]
            handover.rows[notification_id] = Row(
                notification_id,
                event_id=row[1],
                channel=row[2],
                event_type=row[3],
                severity=row[4],
                silent=row[5],
                position_id=row[6],
                signal_id=row[7],
                payload=row[11],
                attempts=0,
                parts_sent=0,
                created_at=now,
            )


NOTIFICATION = Statement(name="notification", sql=_INSERT, order=96, writer=_insert_rows)
STATE = upsert(
    "notification_state",
    "notification_state",
    ("key", "value"),
    order=97,
    conflict="ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = clock_timestamp()",
    dedupe_key=0,
    dedupe_rank=lambda row: 0,  # equal ranks: the last write of a key in a batch wins
)


def notification_id(event_id: str, channel: str) -> str:
    return ids.derive("notification", event_id, channel)


def row_write(draft: Draft, channel: str, *, silent: bool) -> PgWrite:
    return PgWrite(
        NOTIFICATION,
        (
            notification_id(draft.event_id, channel),
            draft.event_id,
            channel,
            draft.type,
            draft.severity,
            silent,
            draft.position_id,
            draft.signal_id,
            draft.subject,
            json.dumps(draft.payload, default=str, separators=(",", ":")),
            draft.event_time,
            draft.payload,  # not a column: what the sender renders from, when the row is handed over
        ),
    )


def state_write(key: str, value: str) -> PgWrite:
    """An empty value means "forgotten" (the row stays, cheaper than a delete in the batch path)."""
    return PgWrite(STATE, (key, value))


@dataclass(frozen=True)
class Row:
    notification_id: str
    event_id: str
    channel: str
    event_type: str
    severity: str
    silent: bool
    position_id: str | None
    signal_id: str | None
    payload: dict[str, Any]
    attempts: int
    parts_sent: int
    created_at: datetime


_COLUMNS = (
    "notification_id::text, event_id, channel, event_type, severity, silent, position_id, signal_id, payload, "
    "attempts, parts_sent, created_at"
)


def _row(values: Sequence[Any]) -> Row:
    payload = values[8] if isinstance(values[8], dict) else json.loads(values[8])
    return Row(*values[:8], payload, *values[9:])  # type: ignore[arg-type,call-arg]


class NotificationStore:
    def __init__(self, database: Database):
        self.database = database

    async def load_state(self) -> dict[str, str]:
        rows = await self.database.fetch("SELECT key, value FROM notification_state WHERE value <> ''")
        return {key: value for key, value in rows}

    async def claim(self, channel: str, *, limit: int, lease_s: float) -> list[Row]:
        """Take the channel's due pending rows (oldest first) for `lease_s` seconds; rows another
        sender holds are skipped; a killed sender's rows are taken again once its lease ran out."""
        rows = await self.database.fetch(
            f"""
            UPDATE notifications SET lease_until = clock_timestamp() + make_interval(secs => %s)
            WHERE notification_id IN (
                SELECT notification_id FROM notifications
                WHERE channel = %s AND status = 'pending' AND next_attempt_at <= clock_timestamp()
                  AND (lease_until IS NULL OR lease_until < clock_timestamp())
                ORDER BY created_at, notification_id
                LIMIT %s
                FOR UPDATE SKIP LOCKED
            )
            RETURNING {_COLUMNS}
            """,
            (lease_s, channel, limit),
        )
        return sorted((_row(r) for r in rows), key=lambda r: (r.created_at, r.notification_id))

    async def sent(self, notification_ids: Sequence[str], *, digest_id: str | None = None) -> None:
        if notification_ids:
            await self.database.execute(
                "UPDATE notifications SET status = 'sent', sent_at = clock_timestamp(), updated_at = clock_timestamp(), "
                "attempts = attempts + 1, lease_until = NULL, last_error = NULL, digest_id = %s::uuid "
                "WHERE notification_id = ANY(%s::uuid[])",
                (digest_id, list(notification_ids)),
            )

    async def part_sent(self, notification_id: str, parts: int) -> None:
        await self.database.execute(
            "UPDATE notifications SET parts_sent = %s, updated_at = clock_timestamp() WHERE notification_id = %s::uuid",
            (parts, notification_id),
        )

    async def failed_attempt(
        self, notification_ids: Sequence[str], error: str, *, delay_s: float, max_attempts: int
    ) -> int:
        """Count an attempt; rows that reached `max_attempts` become failed. Returns how many did."""
        if not notification_ids:
            return 0
        rows = await self.database.fetch(
            "UPDATE notifications SET attempts = attempts + 1, last_error = %s, updated_at = clock_timestamp(), "
            "lease_until = NULL, next_attempt_at = clock_timestamp() + make_interval(secs => %s), "
            "status = CASE WHEN attempts + 1 >= %s THEN 'failed' ELSE 'pending' END "
            "WHERE notification_id = ANY(%s::uuid[]) RETURNING status",
            (error[:1000], delay_s, max_attempts, list(notification_ids)),
        )
        return sum(1 for (status,) in rows if status == "failed")

    async def fail_now(self, notification_id: str, error: str) -> None:
        """A row that can never be sent as it is (its template failed)."""
        await self.database.execute(
            "UPDATE notifications SET status = 'failed', attempts = attempts + 1, last_error = %s, "
            "lease_until = NULL, updated_at = clock_timestamp() WHERE notification_id = %s::uuid",
            (error[:1000], notification_id),
        )

    async def extend(self, notification_ids: Sequence[str], lease_s: float) -> None:
        """Hold rows longer (a long digest waiting for its channel's tokens)."""
        if notification_ids:
            await self.database.execute(
                "UPDATE notifications SET lease_until = clock_timestamp() + make_interval(secs => %s) "
                "WHERE notification_id = ANY(%s::uuid[]) AND status = 'pending'",
                (lease_s, list(notification_ids)),
            )

    async def release(self, notification_ids: Sequence[str]) -> None:
        """Give rows back untouched (the sender is stopping, or the channel is rate limited)."""
        if notification_ids:
            await self.database.execute(
                "UPDATE notifications SET lease_until = NULL WHERE notification_id = ANY(%s::uuid[])",
                (list(notification_ids),),
            )

    async def retry_failed(self, channel: str | None = None) -> int:
        rows = await self.database.fetch(
            "UPDATE notifications SET status = 'pending', attempts = 0, next_attempt_at = clock_timestamp(), "
            "lease_until = NULL, updated_at = clock_timestamp() "
            "WHERE status = 'failed' AND (%s::text IS NULL OR channel = %s) RETURNING 1",
            (channel, channel),
        )
        return len(rows)

    async def listing(self, *, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        rows = await self.database.fetch(
            "SELECT notification_id::text, created_at, channel, event_type, severity, status, attempts, "
            "position_id, signal_id, subject, last_error, sent_at, digest_id::text FROM notifications "
            "WHERE (%s::text IS NULL OR status = %s) ORDER BY created_at DESC, notification_id LIMIT %s",
            (status, status, limit),
        )
        keys = (
            "notification_id",
            "created_at",
            "channel",
            "event_type",
            "severity",
            "status",
            "attempts",
            "position_id",
            "signal_id",
            "subject",
            "last_error",
            "sent_at",
            "digest_id",
        )
        return [dict(zip(keys, row, strict=True)) for row in rows]

    async def purge_sent(self, older_than_days: float, *, limit: int = 5000) -> int:
        """Delete up to `limit` sent rows created more than `older_than_days` ago (oldest first), and
        the forgotten state keys (closed positions) as old; failed and pending rows stay. Returns how
        many rows it deleted (`limit`: there may be more)."""
        rows = await self.database.fetch(
            "DELETE FROM notifications WHERE notification_id IN ("
            "  SELECT notification_id FROM notifications WHERE status = 'sent' "
            "  AND created_at < clock_timestamp() - make_interval(secs => %s) ORDER BY created_at LIMIT %s"
            ") RETURNING 1",
            (older_than_days * 86400.0, limit),
        )
        await self.database.execute(
            "DELETE FROM notification_state WHERE value = '' AND updated_at < clock_timestamp() - make_interval(secs => %s)",
            (older_than_days * 86400.0,),
        )
        return len(rows)

    async def counts(self) -> dict[str, int]:
        rows = await self.database.fetch("SELECT status, count(*) FROM notifications GROUP BY status")
        return {status: int(count) for status, count in rows}
