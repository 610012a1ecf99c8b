"""The audit log on the real PostgreSQL: append-only, one unbroken chain under concurrent writers,
one entry per event however often it is delivered, tampering found at the right entry, and the
`p95 audit` commands."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from typer.testing import CliRunner

from phoenix95.agents.ports import InputRecord, Outcome, PositionChanged
from phoenix95.cli.main import app
from phoenix95.domain.audit import GENESIS, Entry, entry_document, entry_hash
from phoenix95.storage import audit
from phoenix95.storage.postgres import Database, migrate
from phoenix95.storage.sink import StoreSink
from tests.integration.test_storage import sample_outcomes

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
CHAIN_LENGTH = 24


def entries(writer: str, count: int, *, start: int = 0) -> list[Entry]:
    return [
        Entry(
            key=f"{writer}:{n}",
            actor=f"stage:{writer}",
            action="verdict",
            subject=f"{writer}-{n}",
            payload={"n": n, "price": Decimal("60000.5"), "symbol": "BTCUSDT"},
            at=T0,
        )
        for n in range(start, start + count)
    ]


async def connect(url: str, schema: str) -> psycopg.AsyncConnection:
    connection = await psycopg.AsyncConnection.connect(url)
    await connection.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    await connection.commit()
    return connection


def test_the_audit_log_refuses_update_delete_and_truncate(services, namespace):
    async def run() -> None:
        await migrate(services.postgres, namespace.schema)
        async with Database(services.postgres, schema=namespace.schema) as db:
            await audit.record(db, entries("risk", 3))
            for statement in (
                "UPDATE audit_log SET payload = '{}' WHERE seq = 2",
                "DELETE FROM audit_log WHERE seq = 3",
                "TRUNCATE audit_log",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                    await db.execute(statement)
            assert (await db.fetch("SELECT COUNT(*) FROM audit_log"))[0][0] == 3

    asyncio.run(run())


def test_four_concurrent_stage_writers_leave_one_unbroken_chain_and_a_redelivery_adds_nothing(services, namespace):
    writers = ("analysis", "risk", "execution", "positions")

    async def write(name: str) -> None:
        async with Database(services.postgres, schema=namespace.schema, max_size=2) as db:
            for batch in range(15):
                await audit.record(db, entries(name, 7, start=batch * 7))
                await asyncio.sleep(0)

    async def run() -> None:
        await migrate(services.postgres, namespace.schema)
        await asyncio.gather(*(write(name) for name in writers))
        await asyncio.gather(*(write(name) for name in writers))  # every batch delivered again
        result = await audit.verify(services.postgres, namespace.schema)
        assert (result.ok, result.checked, result.last_seq) == (True, 4 * 15 * 7, 4 * 15 * 7)
        async with Database(services.postgres, schema=namespace.schema) as db:
            actors = await db.fetch("SELECT actor, COUNT(*) FROM audit_log GROUP BY actor ORDER BY actor")
        assert actors == sorted((f"stage:{name}", 105) for name in writers)

    asyncio.run(run())


def test_the_sink_audits_verdicts_orders_fills_and_closes_once_in_the_stage_batch(services, namespace):
    async def run() -> None:
        await migrate(services.postgres, namespace.schema)
        outcomes = sample_outcomes()
        tick = next(f for o in outcomes for f in o.persist if isinstance(f, PositionChanged))
        closed_event = tick.event.model_copy(
            update={"kind": "closed", "status": "closed", "exit_price": Decimal("59000"), "close_reason": "stop_loss"}
        )
        closed = PositionChanged(closed_event, tick.position)
        outcomes.append(Outcome(InputRecord("t", 0, 9, None, None, b""), persist=[closed]))
        async with Database(services.postgres, schema=namespace.schema) as db:
            sink = StoreSink(db, None, None)
            assert await sink.persist("test", outcomes) == []
            assert await sink.persist("test", outcomes) == []  # re-delivered: no second entry
            rows = await db.fetch("SELECT seq, actor, action FROM audit_log ORDER BY seq")
            off = StoreSink(db, None, None, audit=False)
            assert await off.persist("test", sample_outcomes()) == []
            assert (await db.fetch("SELECT COUNT(*) FROM audit_log"))[0][0] == len(rows)
        assert rows == [
            (1, "stage:test", "verdict"),
            (2, "stage:test", "order"),
            (3, "stage:test", "fill"),
            (4, "stage:test", "close"),
        ]
        assert (await audit.verify(services.postgres, namespace.schema)).ok

    asyncio.run(run())


# -- tampering ---------------------------------------------------------------------------------------


TAMPERINGS = ("modified payload", "deleted row", "two rows swapped", "forged row", "inserted row")


async def tamper(connection: psycopg.AsyncConnection, kind: str, seq: int, other: int) -> int:
    """Tamper with the chain as a superuser would (trigger disabled); returns the expected broken_at."""
    await connection.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
    if kind == "modified payload":
        await connection.execute(
            "UPDATE audit_log SET payload = replace(payload, '\"n\":', '\"n\":1') WHERE seq = %s", (seq,)
        )
        return seq
    if kind == "deleted row":
        await connection.execute("DELETE FROM audit_log WHERE seq = %s", (seq,))
        return seq + 1
    if kind == "two rows swapped":
        await connection.execute(
            """UPDATE audit_log a SET entry_key = b.entry_key || ':swapped', at = b.at, actor = b.actor,
                      action = b.action, subject = b.subject, payload = b.payload, prev_hash = b.prev_hash,
                      hash = b.hash
                 FROM audit_log b WHERE (a.seq, b.seq) IN ((%s, %s), (%s, %s))""",
            (seq, other, other, seq),
        )
        return seq
    # a row whose hash is recomputed over its content but chained to the wrong predecessor
    cursor = await connection.execute(
        f"SELECT {audit.AT_TEXT}, actor, action, subject, entry_key, payload FROM audit_log WHERE seq = %s", (seq,)
    )
    at, actor, action, subject, key, payload = (await cursor.fetchone()) or ()
    wrong_prev = bytes(32) if seq > 1 else b"\x01" * 32
    if kind == "forged row":
        forged = payload.replace('"n":', '"n":9')
        digest = entry_hash(wrong_prev, entry_document(action, actor, at, key, forged, subject))
        await connection.execute(
            "UPDATE audit_log SET payload = %s, prev_hash = %s, hash = %s WHERE seq = %s",
            (forged, wrong_prev, digest, seq),
        )
        return seq
    # inserted at the end, out of chain
    new_seq = CHAIN_LENGTH + 1
    digest = entry_hash(wrong_prev, entry_document(action, "cli:mallory", at, "forged", payload, subject))
    await connection.execute(
        """INSERT INTO audit_log (seq, entry_key, at, actor, action, subject, payload, prev_hash, hash)
           VALUES (%s, 'forged', %s, 'cli:mallory', %s, %s, %s, %s, %s)""",
        (new_seq, T0, action, subject, payload, wrong_prev, digest),
    )
    return new_seq


def test_hypothesis_tampering_is_found_with_the_right_broken_at(services, namespace):
    found: list[tuple[str, int, int | None]] = []

    async def setup() -> None:
        await migrate(services.postgres, namespace.schema)
        async with Database(services.postgres, schema=namespace.schema) as db:
            await audit.record(db, entries("risk", CHAIN_LENGTH))
        assert (await audit.verify(services.postgres, namespace.schema)).ok

    async def check(kind: str, seq: int, other: int) -> None:
        connection = await connect(services.postgres, namespace.schema)
        try:
            expected = await tamper(connection, kind, seq, other)
            result = await audit.verify_on(connection)
            found.append((kind, seq, result.broken_at))
            assert not result.ok and result.broken_at == expected, (kind, seq, other, result)
            if kind != "inserted row":
                later = await audit.verify_on(connection, from_seq=expected + 1)
                assert later.ok or later.broken_at == expected + 1  # only the link to the tampered row is gone
        finally:
            await connection.rollback()  # the tampering and the disabled trigger go away
            await connection.close()

    asyncio.run(setup())

    @settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.sampled_from(TAMPERINGS), st.integers(1, CHAIN_LENGTH - 1), st.integers(1, CHAIN_LENGTH - 1))
    def tampered(kind: str, seq: int, offset: int) -> None:
        other = seq + 1 + (offset % (CHAIN_LENGTH - seq))
        asyncio.run(check(kind, seq, other))

    tampered()
    assert {kind for kind, _, _ in found} == set(TAMPERINGS)
    by_kind = {kind: sorted({seq for k, seq, _ in found if k == kind}) for kind in TAMPERINGS}
    print("tamper findings (kind: tampered seqs, each found at its expected broken_at):", by_kind)
    assert asyncio.run(audit.verify(services.postgres, namespace.schema)).ok  # untouched after the rollbacks


# -- the commands -------------------------------------------------------------------------------------


def test_p95_audit_verify_anchor_and_export(services, namespace, tmp_path: Path):
    async def setup() -> None:
        await migrate(services.postgres, namespace.schema)
        async with Database(services.postgres, schema=namespace.schema) as db:
            await audit.record(db, entries("execution", 5))

    asyncio.run(setup())
    runner = CliRunner()
    verified = runner.invoke(app, ["audit", "verify", "--json"])
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.stdout)["checked"] == 5

    anchors = tmp_path / "anchors.jsonl"
    anchored = runner.invoke(app, ["audit", "anchor", "--file", str(anchors)])
    assert anchored.exit_code == 0, anchored.output
    anchor = json.loads(anchors.read_text())
    assert anchor["seq"] == 5 and len(anchor["hash"]) == 64

    exported = runner.invoke(app, ["audit", "export", "--from", "2", "--until", "4", "--format", "jsonl"])
    assert exported.exit_code == 0, exported.output
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [line["seq"] for line in lines] == [2, 3, 4]
    assert lines[0]["payload"] == {"n": 1, "price": "60000.5", "symbol": "BTCUSDT"}
    first_prev = runner.invoke(app, ["audit", "export", "--until", "1", "--format", "csv"])
    assert first_prev.stdout.splitlines()[1].endswith(f"{GENESIS.hex()},{lines[0]['prev_hash']}")

    async def rewrite() -> None:
        # a superuser rewrites the whole chain consistently: only the anchor can tell
        connection = await connect(services.postgres, namespace.schema)
        try:
            await connection.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
            await connection.execute("DELETE FROM audit_log")
            await connection.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only")
            await connection.commit()
        finally:
            await connection.close()
        async with Database(services.postgres, schema=namespace.schema) as db:
            rewritten = entries("execution", 5)
            rewritten[4] = Entry("execution:4", "stage:execution", "verdict", "x", {"n": 400}, T0)
            await audit.record(db, rewritten)

    asyncio.run(rewrite())
    chain_only = runner.invoke(app, ["audit", "verify"])
    assert chain_only.exit_code == 0, chain_only.output  # internally consistent
    with_anchor = runner.invoke(app, ["audit", "verify", "--anchor", str(anchors), "--json"])
    assert with_anchor.exit_code == 1
    report = json.loads(with_anchor.stdout)
    assert (report["ok"], report["broken_at"]) == (False, 5)


def test_postgresql_assembles_the_same_entry_document_as_python_for_awkward_text(services, namespace):
    awkward = [
        'quote " backslash \\ slash /',
        "controls \b\f\n\r\t \x01\x1f \x7f",
        "unicode \u20ac \U0001f600 \ufb33",
    ]

    async def run() -> None:
        await migrate(services.postgres, namespace.schema)
        async with Database(services.postgres, schema=namespace.schema) as db:
            written = [
                Entry(f"k{n}:{text}", text, text, text, {text: text, "nul": "\x00"}, T0)
                for n, text in enumerate(awkward)
            ] + [Entry("no-subject", "cli:x", "halt", None, {}, T0)]
            await audit.record(db, written)
            rows = await db.fetch(
                f"SELECT {audit.DOCUMENT_SQL}, {audit.AT_TEXT}, actor, action, subject, entry_key, payload"
                " FROM audit_log ORDER BY seq"
            )
        for document, at, actor, action, subject, key, payload in rows:
            assert document == entry_document(action, actor, at, key, payload, subject)
        assert (await audit.verify(services.postgres, namespace.schema)).checked == len(written)

    asyncio.run(run())
