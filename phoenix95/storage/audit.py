"""The audit chain in PostgreSQL: appending inside a writer's own transaction, reading, verifying.

How a writer appends (any writer, in any transaction it already has open):

    async with db.pool.connection() as connection, connection.transaction(), connection.cursor() as cursor:
        ...  # the writer's own effect
        await append(cursor, [Entry(key=..., actor=..., action=..., subject=..., payload={...}, at=now)])

`append` takes a transaction-scoped advisory lock on the chain, skips entries whose key is there
already (a re-delivered event), reads the last hash under the lock and inserts the new entries
chained to it. The lock is held until the writer's transaction ends, so two writers never chain to the
same predecessor: the chain cannot fork. Append last in a transaction, to hold the lock briefly.

For one action outside any transaction (the API, the dashboard): `record_action(db, ...)`.
Stages do not call this module: their sink adds `AUDIT` writes (storage/audit_facts.py) to the
batch it writes anyway, so an effect never exists without its entry.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg

from phoenix95.domain.audit import (
    GENESIS,
    HASH_MISMATCH,
    Entry,
    Verification,
    entry_document,
    entry_hash,
    verify_documents,
)
from phoenix95.storage.postgres import Database, PgWrite, Statement

#: The chain's advisory lock, per schema (tests and replays keep their chains apart).
_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('phoenix95.audit.' || current_schema(), 0))"
_INSERT = (
    "INSERT INTO audit_log (seq, entry_key, at, actor, action, subject, payload, prev_hash, hash)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_COLUMNS = ("seq", "entry_key", "at", "actor", "action", "subject", "payload", "prev_hash", "hash")
#: How verification reads `at`: the same text `domain.audit.timestamp_text` hashed.
AT_TEXT = "to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
#: The entry document (`domain.audit.entry_document`) assembled by PostgreSQL: to_json escapes text
#: as RFC 8785 does ('"', '\\', \b \f \n \r \t, other controls as lowercase \u00xx, nothing else).
DOCUMENT_SQL = (
    """'{"action":' || to_json(action)::text || ',"actor":' || to_json(actor)::text || ',"at":"' || """
    + AT_TEXT
    + """ || '","key":' || to_json(entry_key)::text || ',"payload":' || payload"""
    + """ || ',"subject":' || COALESCE(to_json(subject)::text, 'null') || '}'"""
)


async def lock_chain(cursor: psycopg.AsyncCursor[Any]) -> None:
    """Serialize with every other writer of the chain until this transaction ends."""
    await cursor.execute(_LOCK)


async def append(cursor: psycopg.AsyncCursor[Any], entries: Sequence[Entry]) -> int:
    """Append `entries` (in order) to the chain inside the cursor's transaction; entries whose key
    is in the log already are skipped. Returns how many were written."""
    if not entries:
        return 0
    unique: dict[str, Entry] = {}
    for entry in entries:
        unique.setdefault(entry.key, entry)
    await lock_chain(cursor)
    await cursor.execute("SELECT entry_key FROM audit_log WHERE entry_key = ANY(%s)", (list(unique),))
    for (key,) in await cursor.fetchall():
        unique.pop(key, None)
    if not unique:
        return 0
    await cursor.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
    last = await cursor.fetchone()
    seq, prev = (last[0], bytes(last[1])) if last else (0, GENESIS)
    rows = []
    for entry in unique.values():
        at_text, payload = entry.document()
        seq += 1
        digest = entry_hash(prev, entry_document(entry.action, entry.actor, at_text, entry.key, payload, entry.subject))
        rows.append((seq, entry.key, entry.at, entry.actor, entry.action, entry.subject, payload, prev, digest))
        prev = digest
    if len(rows) >= 32:
        async with cursor.copy(f"COPY audit_log ({', '.join(_COLUMNS)}) FROM STDIN") as copy:
            for row in rows:
                await copy.write_row(row)
    else:
        await cursor.executemany(_INSERT, rows)
    return len(rows)


async def _append_writes(cursor: psycopg.AsyncCursor[Any], writes: list[PgWrite]) -> None:
    await append(cursor, [write.params[0] for write in writes])


#: The statement a stage's batch carries its entries in; it runs last in the batch's transaction.
AUDIT = Statement(name="audit_log", sql="", order=10_000, writer=_append_writes)


def audit_write(entry: Entry) -> PgWrite:
    return PgWrite(AUDIT, (entry,))


async def record(db: Database, entries: Sequence[Entry]) -> int:
    """Append entries in a transaction of their own."""
    async with db.pool.connection() as connection, connection.transaction(), connection.cursor() as cursor:
        return await append(cursor, entries)


async def record_action(
    db: Database,
    *,
    actor: str,
    action: str,
    subject: str | None,
    payload: Mapping[str, Any],
    key: str | None = None,
    at: datetime | None = None,
) -> None:
    """Audit one action of a person or a client: the API and the dashboard call this.

    `actor` names who did it (``api-key:<id>``, ``user:<name>``, ``cli:<user>``); `action` what
    (``trading_state``, ``symbol_lock``, ``settings``...); `payload` the figures (str, int, bool,
    Decimal, datetime, lists and dicts of them; no floats). Give `key` (e.g. the request id) when the
    same action may be submitted twice: the second is then not recorded.
    """
    entry = Entry(
        key=key or f"{action}:{uuid.uuid4()}",
        actor=actor,
        action=action,
        subject=subject,
        payload=payload,
        at=at or datetime.now(UTC),
    )
    await record(db, [entry])


# -- configuration seen at worker start ------------------------------------------------------------


def settings_digest(masked_settings: Mapping[str, Any]) -> str:
    """sha256 of the effective settings (secrets masked) as sorted JSON."""
    text = json.dumps(masked_settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


async def record_configuration(db: Database, *, actor: str, digest: str, at: datetime | None = None) -> bool:
    """Audit the effective configuration a worker starts with when it differs from the one this
    actor last started with. Returns whether an entry was written."""
    async with db.pool.connection() as connection, connection.transaction(), connection.cursor() as cursor:
        await lock_chain(cursor)
        await cursor.execute(
            "SELECT payload FROM audit_log WHERE action = 'configuration' AND actor = %s ORDER BY seq DESC LIMIT 1",
            (actor,),
        )
        last = await cursor.fetchone()
        previous = json.loads(last[0]).get("settings_sha256") if last else None
        if previous == digest:
            return False
        entry = Entry(
            key=f"configuration:{actor}:{uuid.uuid4()}",
            actor=actor,
            action="configuration",
            subject=actor,
            payload={"settings_sha256": digest, "previous_sha256": previous},
            at=at or datetime.now(UTC),
        )
        return await append(cursor, [entry]) == 1


# -- reading ---------------------------------------------------------------------------------------


async def verify(url: str, schema: str, *, from_seq: int = 1) -> Verification:
    """Recompute the chain from `from_seq` (1: from the start). Starting later trusts the hash of
    entry ``from_seq - 1``, so it checks what was appended since a verified point."""
    async with await psycopg.AsyncConnection.connect(url) as connection:
        await connection.execute(psycopg.sql.SQL("SET search_path TO {}").format(psycopg.sql.Identifier(schema)))
        async with connection.transaction():
            return await verify_on(connection, from_seq=from_seq)


async def verify_on(
    connection: psycopg.AsyncConnection[Any], *, from_seq: int = 1, batch: int = 20_000
) -> Verification:
    """`verify` on an open connection, inside its transaction.

    PostgreSQL assembles each entry's document (`DOCUMENT_SQL`, one text column instead of seven:
    reading is what limits the speed) and Python hashes it. Where a recomputed hash differs, the
    entry is rebuilt from its columns in Python (`entry_document`) before it is called broken, so a
    difference in how the server escapes text can never fake a break, and the verdict is Python's.
    """
    expected_prev = GENESIS
    expected_seq = max(1, from_seq)
    if expected_seq > 1:
        cursor = await connection.execute("SELECT hash FROM audit_log WHERE seq = %s", (expected_seq - 1,))
        row = await cursor.fetchone()
        if row is None:
            return Verification(False, 0, expected_seq - 1, "the entry before --from is missing")
        expected_prev = bytes(row[0])
    checked = 0
    last_seq: int | None = None
    last_hash: bytes | None = None
    rebuilt: dict[int, str] = {}
    async with connection.cursor(name="p95_audit_chain", binary=True) as chain:
        chain.itersize = batch
        await chain.execute(
            f"SELECT seq, {DOCUMENT_SQL}, prev_hash, hash FROM audit_log WHERE seq >= %s ORDER BY seq", (expected_seq,)
        )
        while rows := await chain.fetchmany(batch):
            while True:
                result = verify_documents(
                    rows, expected_seq=expected_seq, expected_prev=expected_prev, documents=rebuilt
                )
                if result.ok or result.problem != HASH_MISMATCH or result.broken_at in rebuilt:
                    break
                assert result.broken_at is not None
                rebuilt[result.broken_at] = await _document_in_python(connection, result.broken_at)
            checked += result.checked
            if not result.ok:
                return Verification(False, checked, result.broken_at, result.problem, result.last_seq, result.last_hash)
            assert result.last_seq is not None and result.last_hash is not None
            last_seq, last_hash = result.last_seq, result.last_hash
            expected_seq, expected_prev = last_seq + 1, last_hash
    return Verification(True, checked, None, None, last_seq, last_hash)


async def _document_in_python(connection: psycopg.AsyncConnection[Any], seq: int) -> str:
    cursor = await connection.execute(
        f"SELECT {AT_TEXT}, actor, action, subject, entry_key, payload FROM audit_log WHERE seq = %s", (seq,)
    )
    row = await cursor.fetchone()
    assert row is not None
    at, actor, action, subject, key, payload = row
    return entry_document(action, actor, at, key, payload, subject)


async def head(db: Database) -> tuple[int, bytes, datetime] | None:
    """(seq, hash, at) of the newest entry."""
    rows = await db.fetch("SELECT seq, hash, at FROM audit_log ORDER BY seq DESC LIMIT 1")
    return (rows[0][0], bytes(rows[0][1]), rows[0][2]) if rows else None


async def hash_at(db: Database, seq: int) -> bytes | None:
    rows = await db.fetch("SELECT hash FROM audit_log WHERE seq = %s", (seq,))
    return bytes(rows[0][0]) if rows else None
