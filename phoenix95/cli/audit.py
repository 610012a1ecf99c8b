"""`p95 audit verify | anchor | export`: the tamper-evident audit chain (storage/audit.py)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

audit_app = typer.Typer(help="The tamper-evident audit log: verify, anchor, export.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(
    from_seq: int = typer.Option(1, "--from", min=1, help="Start at this sequence number (trusts the one before)."),
    anchor: Path = typer.Option(
        None, "--anchor", help="Also check the anchors kept in this file (lines written by `p95 audit anchor --file`)."
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Recompute the hash chain. Exit 1 naming the first broken entry (broken_at) when a row was
    modified, deleted, reordered or inserted out of chain, or an anchor no longer matches."""
    import time

    from phoenix95.cli.console import print_json, stderr
    from phoenix95.settings import get_settings
    from phoenix95.storage.audit import verify

    settings = get_settings()
    started = time.perf_counter()
    result = asyncio.run(verify(settings.postgres_url(), settings.postgres.db_schema, from_seq=from_seq))
    seconds = time.perf_counter() - started
    report: dict[str, Any] = {
        "ok": result.ok,
        "checked": result.checked,
        "broken_at": result.broken_at,
        "problem": result.problem,
        "last_seq": result.last_seq,
        "last_hash": result.last_hash.hex() if result.last_hash else None,
        "seconds": round(seconds, 3),
        "entries_per_second": round(result.checked / seconds) if seconds > 0 else None,
    }
    if anchor is not None and result.ok:
        mismatch = asyncio.run(_check_anchors(anchor))
        report["anchors_checked"] = mismatch[0]
        if mismatch[1] is not None:
            report.update(ok=False, broken_at=mismatch[1], problem=mismatch[2])
    if as_json:
        print_json(report)
    elif report["ok"]:
        stderr.print(
            f"audit chain ok: {result.checked} entries (to seq {result.last_seq}) in {seconds:.2f}s"
            + (f", {report['anchors_checked']} anchors match" if anchor is not None else "")
        )
    else:
        stderr.print(f"audit chain BROKEN at seq {report['broken_at']}: {report['problem']}")
    if not report["ok"]:
        raise typer.Exit(1)


async def _check_anchors(path: Path) -> tuple[int, int | None, str | None]:
    """(anchors checked, first seq whose stored hash differs from its anchor, problem)."""
    from phoenix95.cli.console import UserError
    from phoenix95.settings import get_settings
    from phoenix95.storage import audit
    from phoenix95.storage.postgres import Database

    if not path.exists():
        raise UserError(f"no anchor file {path}")
    anchors = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    settings = get_settings()
    async with Database(settings.postgres_url(), schema=settings.postgres.db_schema) as db:
        for index, item in enumerate(anchors):
            stored = await audit.hash_at(db, int(item["seq"]))
            if stored is None:
                return index, int(item["seq"]), "an anchored entry is missing (the table was rewritten)"
            if stored.hex() != item["hash"]:
                return index, int(item["seq"]), "the anchored hash differs (the table was rewritten)"
    return len(anchors), None, None


@audit_app.command("anchor")
def audit_anchor(
    file: Path = typer.Option(None, "--file", help="Append the anchor to this file (one JSON line)."),
    timeseries: bool = typer.Option(False, "--timeseries", help="Also write it to the time-series store."),
) -> None:
    """Print the newest entry's sequence number and hash, to keep outside the database."""
    from phoenix95.cli.console import print_json, stderr

    anchor = asyncio.run(_anchor(timeseries))
    if anchor is None:
        stderr.print("the audit log is empty: nothing to anchor")
        return
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        with file.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(anchor, sort_keys=True) + "\n")
    print_json(anchor)


async def _anchor(timeseries: bool) -> dict[str, Any] | None:
    from phoenix95.cli.console import UserError
    from phoenix95.settings import get_settings
    from phoenix95.storage import audit
    from phoenix95.storage.postgres import Database
    from phoenix95.storage.timeseries import TimeseriesSink, line

    settings = get_settings()
    async with Database(settings.postgres_url(), schema=settings.postgres.db_schema) as db:
        newest = await audit.head(db)
    if newest is None:
        return None
    seq, digest, at = newest
    anchored_at = datetime.now(UTC)
    anchor = {
        "seq": seq,
        "hash": digest.hex(),
        "at": at.isoformat(),
        "anchored_at": anchored_at.isoformat(),
        "schema": settings.postgres.db_schema,
    }
    if timeseries:
        if not (settings.influx.enabled and settings.influx.url):
            raise UserError("no time-series store configured (P95_INFLUX__URL)")
        sink = TimeseriesSink(
            settings.influx.url,
            token=settings.influx.token.get_secret_value(),
            org=settings.influx.org,
            bucket=settings.influx.bucket,
            namespace=settings.namespace,
        )
        try:
            point = line(
                "s4_audit_anchor",
                {"namespace": settings.namespace, "schema": settings.postgres.db_schema},
                {"seq": seq, "hash": digest.hex()},
                anchored_at,
            )
            assert point is not None
            await sink.write_lines([point])
        finally:
            await sink.close()
    return anchor


@audit_app.command("export")
def audit_export(
    since: str = typer.Option(None, "--from", help="From this time (ISO-8601) or sequence number."),
    until: str = typer.Option(None, "--until", help="Before this time (ISO-8601) or up to this sequence number."),
    output_format: str = typer.Option("jsonl", "--format", help="jsonl or csv."),
    output: Path = typer.Option(None, "--output", "-o", help="Write here instead of stdout."),
) -> None:
    """Export entries with their hashes (hex), in sequence order."""
    import sys

    from phoenix95.cli.console import UserError, stderr

    if output_format not in ("jsonl", "csv"):
        raise UserError(f"--format must be jsonl or csv, not {output_format!r}")
    where, params = _range(since, until)
    handle = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
    try:
        count = asyncio.run(_export(where, params, output_format, handle))
    finally:
        if output:
            handle.close()
    stderr.print(f"exported {count} entries")


def _range(since: str | None, until: str | None) -> tuple[str, list[Any]]:
    clauses = ["TRUE"]
    params: list[Any] = []
    for value, by_seq, by_time in ((since, "seq >= %s", "at >= %s"), (until, "seq <= %s", "at < %s")):
        if value is None:
            continue
        if value.isdigit():
            clauses.append(by_seq)
            params.append(int(value))
        else:
            clauses.append(by_time)
            params.append(_parse_time(value))
    return " AND ".join(clauses), params


def _parse_time(value: str) -> datetime:
    from phoenix95.cli.console import UserError

    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise UserError(f"cannot read {value!r} as a time (ISO-8601) or a sequence number") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


EXPORT_COLUMNS = ("seq", "at", "actor", "action", "subject", "entry_key", "payload", "prev_hash", "hash")


async def _export(where: str, params: list[Any], output_format: str, handle: Any) -> int:
    import csv

    from phoenix95.settings import get_settings
    from phoenix95.storage.audit import AT_TEXT
    from phoenix95.storage.postgres import Database

    settings = get_settings()
    async with Database(settings.postgres_url(), schema=settings.postgres.db_schema) as db:
        rows = await db.fetch(
            f"""SELECT seq, {AT_TEXT}, actor, action, subject, entry_key, payload, encode(prev_hash, 'hex'),
                       encode(hash, 'hex') FROM audit_log WHERE {where} ORDER BY seq""",
            params,
        )
    if output_format == "csv":
        writer = csv.writer(handle)
        writer.writerow(EXPORT_COLUMNS)
        writer.writerows(rows)
    else:
        for row in rows:
            item = dict(zip(EXPORT_COLUMNS, row, strict=True))
            item["payload"] = json.loads(item["payload"])
            handle.write(json.dumps(item, ensure_ascii=False) + "\n")
    return len(rows)
