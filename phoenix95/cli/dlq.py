"""`p95 dlq list | replay`: inspect dead letters and re-publish their originals after a fix."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import typer

dlq_app = typer.Typer(help="Dead letters: what could not be processed, and why.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(dlq_app, name="dlq")


def _parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    from phoenix95.schemas.signal_input import parse_timestamp

    parsed = parse_timestamp(value)
    if not isinstance(parsed, datetime):
        from phoenix95.cli.console import UserError

        raise UserError(f"cannot read {value!r} as a time (ISO-8601 or epoch seconds/milliseconds)")
    return parsed


def _filters(
    stage: str | None, reason: str | None, since: str | None, until: str | None, ids: list[str] | None
) -> tuple[str, list[Any]]:
    clauses: list[str] = ["TRUE"]
    params: list[Any] = []
    if stage:
        clauses.append("stage = %s")
        params.append(stage)
    if reason:
        clauses.append("reason = %s")
        params.append(reason.upper())
    if since:
        clauses.append("dead_at >= %s")
        params.append(_parse_time(since))
    if until:
        clauses.append("dead_at < %s")
        params.append(_parse_time(until))
    if ids:
        clauses.append("event_id = ANY(%s::uuid[])")
        params.append(ids)
    return " AND ".join(clauses), params


@dlq_app.command("list")
def dlq_list(
    stage: str = typer.Option(None, help="Only this stage (analysis, risk, execution, positions)."),
    reason: str = typer.Option(None, help="Only this reason code, e.g. DECODE_ERROR."),
    since: str = typer.Option(None, help="From this time (ISO-8601 or epoch)."),
    until: str = typer.Option(None, help="Before this time."),
    limit: int = typer.Option(50, help="At most this many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per dead letter."),
) -> None:
    """List dead letters (newest first) with stage, reason, error and where they came from."""
    from phoenix95.cli.console import print_json

    where, params = _filters(stage, reason, since, until, None)
    rows = asyncio.run(_list(where, params, limit))
    if as_json:
        print_json(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "dead at", "stage", "reason", "source", "error", "replays")
    for row in rows:
        table.add_row(
            row["id"][:8],
            row["dead_at"][:19],
            row["stage"],
            row["reason"],
            f"{row['source_topic']}[{row['source_partition']}]@{row['source_offset']}",
            row["error"][:80],
            str(row["replay_count"]),
        )
    Console().print(table)
    Console(stderr=True).print(f"{len(rows)} dead letter(s)")


async def _list(where: str, params: list[Any], limit: int) -> list[dict[str, Any]]:
    from phoenix95.settings import get_settings
    from phoenix95.storage.postgres import Database

    settings = get_settings()
    async with Database(settings.postgres_url(), schema=settings.postgres.db_schema) as db:
        rows = await db.fetch(
            f"""SELECT event_id::text, dead_at, stage, reason, error, source_topic, source_partition, source_offset,
                       original_key, length(original_value), replay_count, correlation_id
                  FROM dead_letters WHERE {where} ORDER BY dead_at DESC LIMIT %s""",
            [*params, limit],
        )
    return [
        {
            "id": r[0],
            "dead_at": r[1].isoformat(),
            "stage": r[2],
            "reason": r[3],
            "error": r[4],
            "source_topic": r[5],
            "source_partition": r[6],
            "source_offset": r[7],
            "key": r[8].decode("utf-8", "replace") if r[8] else None,
            "bytes": r[9],
            "replay_count": r[10],
            "correlation_id": r[11],
        }
        for r in rows
    ]


@dlq_app.command("replay")
def dlq_replay(
    ids: list[str] = typer.Option(None, "--id", help="Dead-letter id (repeatable)."),
    stage: str = typer.Option(None, help="All dead letters of this stage..."),
    reason: str = typer.Option(None, help="...with this reason code."),
    since: str = typer.Option(None, help="...from this time."),
    until: str = typer.Option(None, help="...before this time."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be re-published."),
) -> None:
    """Re-publish the original bytes, key and headers of selected dead letters to their source topic."""
    from phoenix95.cli.console import UserError, stderr

    if not (ids or stage or reason or since or until):
        raise UserError("select what to replay: --id, --stage, --reason, --since or --until")
    where, params = _filters(stage, reason, since, until, ids)
    count = asyncio.run(_replay(where, params, dry_run))
    stderr.print(f"{'would re-publish' if dry_run else 're-published'} {count} message(s)")


async def _replay(where: str, params: list[Any], dry_run: bool) -> int:
    from phoenix95.schemas.codec import Codec
    from phoenix95.schemas.topics import Topics
    from phoenix95.settings import get_settings
    from phoenix95.storage.postgres import Database
    from phoenix95.streams.producer import EventProducer

    settings = get_settings()
    async with Database(settings.postgres_url(), schema=settings.postgres.db_schema) as db:
        rows = await db.fetch(
            f"""SELECT event_id::text, source_topic, original_key, original_value, original_headers
                  FROM dead_letters WHERE {where} ORDER BY source_topic, source_partition, source_offset""",
            params,
        )
        if dry_run or not rows:
            return len(rows)
        producer = EventProducer(
            settings.kafka.bootstrap_servers, Topics(settings.namespace), Codec.for_settings(settings)
        )
        await producer.start()
        try:
            records = []
            for event_id, topic, key, value, headers in rows:
                original = [(h["key"], bytes.fromhex(h["value"]) if h.get("value") else b"") for h in headers or []]
                original = [h for h in original if h[0] != "p95-replayed-from"]
                records.append((topic, key, value, [*original, ("p95-replayed-from", event_id.encode())]))
            await producer.publish_raw(records)
        finally:
            await producer.stop()
        await _mark_replayed(db, rows)
        return len(rows)


async def _mark_replayed(db: Any, rows: list[tuple[Any, ...]]) -> None:
    """Count the re-drive and audit it (one entry per dead letter and re-drive), in one transaction."""
    import getpass

    from phoenix95.domain.audit import Entry
    from phoenix95.storage.audit import append

    actor = f"cli:{getpass.getuser()}"
    async with db.pool.connection() as connection, connection.transaction(), connection.cursor() as cursor:
        await cursor.execute(
            """UPDATE dead_letters SET replay_count = replay_count + 1, replayed_at = NOW()
                WHERE event_id = ANY(%s::uuid[])
            RETURNING event_id::text, replay_count, replayed_at, stage, reason, source_topic, source_partition,
                      source_offset""",
            ([row[0] for row in rows],),
        )
        entries = [
            Entry(
                key=f"dlq_replay:{event_id}:{count}",
                actor=actor,
                action="dlq_replay",
                subject=event_id,
                payload={
                    "replay_count": count,
                    "stage": stage,
                    "reason": reason,
                    "source": f"{topic}[{partition}]@{offset}",
                },
                at=replayed_at,
            )
            for event_id, count, replayed_at, stage, reason, topic, partition, offset in await cursor.fetchall()
        ]
        await append(cursor, sorted(entries, key=lambda entry: entry.key))
