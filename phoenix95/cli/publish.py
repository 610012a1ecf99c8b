"""`p95 publish [FILE|-]`: publish signals from JSON lines or CSV (a file or stdin) to p95.signals.

Every line is validated on its own: an invalid one is reported with its line number and the rest go
on. A line without `signal_id` gets one derived from its content, so publishing the same file twice
does not trade twice (the analysis stage dead-letters the repeats as DUPLICATE). Progress and the
summary go to stderr; `--json` prints the summary on stdout. Exit status: 0 all published (or valid,
with --dry-run), 1 some line rejected or the broker unreachable.
"""

from __future__ import annotations

import asyncio
import csv
import json
import re
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Literal, NoReturn

import typer
from rich.console import Console

Format = Literal["auto", "jsonl", "csv"]
#: Lines published per broker round trip when no --rate is given.
BATCH_SIZE = 500
_SHOWN_REJECTIONS = 50


@dataclass(frozen=True)
class Record:
    """One input line: its payload, or why it could not be read."""

    line: int
    payload: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class Summary:
    read: int = 0
    published: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    dry_run: bool = False
    seconds: float = 0.0
    error: str | None = None

    def reasons(self) -> dict[str, list[int]]:
        grouped: dict[str, list[int]] = {}
        for line, reason in self.rejected:
            grouped.setdefault(reason, []).append(line)
        return grouped

    def to_json(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "valid" if self.dry_run else "published": self.published,
            "rejected": len(self.rejected),
            "dry_run": self.dry_run,
            "seconds": round(self.seconds, 3),
            "rejections": [{"line": line, "reason": reason} for line, reason in self.rejected],
            "error": self.error,
        }


# -- reading ------------------------------------------------------------------------------------------


def parse_rate(text: str | None) -> float | None:
    """``100/s``, ``100`` or ``6000/min`` -> signals per second (None: as fast as possible)."""
    if text is None or not text.strip():
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|second|m|min|minute))?\s*", text)
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"--rate {text!r}: expected a positive number per second, e.g. 50/s")
    per_second = float(match.group(1))
    return per_second / 60 if (match.group(2) or "s").startswith("m") else per_second


def read_records(lines: Iterable[str], fmt: Format = "auto", *, name: str = "") -> Iterator[Record]:
    """Records from JSON lines or CSV (with a header row). `auto` decides by the file name, else by
    the first non-blank line (``{`` means JSON lines)."""
    stream = iter(lines)
    head: list[str] = []
    if fmt == "auto":
        suffix = Path(name).suffix.lower()
        if suffix == ".csv":
            fmt = "csv"
        elif suffix in (".jsonl", ".ndjson", ".json"):
            fmt = "jsonl"
        else:
            for line in stream:
                head.append(line)
                if line.strip():
                    break
            fmt = "jsonl" if head and head[-1].lstrip().startswith("{") else "csv"
    source = _chain(head, stream)
    return _json_lines(source) if fmt == "jsonl" else _csv_rows(source)


def _chain(head: list[str], rest: Iterator[str]) -> Iterator[str]:
    yield from head
    yield from rest


def _json_lines(lines: Iterable[str]) -> Iterator[Record]:
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            value = json.loads(text, parse_float=Decimal)
        except ValueError as error:
            yield Record(number, error=f"invalid JSON: {error}")
            continue
        if isinstance(value, dict):
            yield Record(number, payload=value)
        else:
            yield Record(number, error="a line must be one JSON object")


def _csv_rows(lines: Iterable[str]) -> Iterator[Record]:
    reader = csv.DictReader(lines)
    for row in reader:
        number = reader.line_num
        if None in row:
            yield Record(number, error=f"more values than the {len(reader.fieldnames or [])} header columns")
            continue
        payload = {key.strip(): value.strip() for key, value in row.items() if key and value and value.strip()}
        yield Record(number, payload=payload)


def _line_count(path: Path) -> int | None:
    try:
        with path.open("rb") as handle:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    except OSError:
        return None


# -- publishing -----------------------------------------------------------------------------------------


async def publish_records(
    records: Iterable[Record],
    publisher: Any,
    *,
    rate: float | None,
    dry_run: bool,
    on_progress: Any = None,
    on_rejected: Any = None,
) -> Summary:
    """Validate every record and publish the valid ones (in batches, or paced at `rate` per second).
    When the broker fails, stops there: `summary.error` says why."""
    from phoenix95.connectors.publisher import BrokerUnavailable
    from phoenix95.domain import ids
    from phoenix95.schemas.signal_input import InvalidSignal

    summary = Summary(dry_run=dry_run)
    started = time.monotonic()
    batch: list[Any] = []

    async def flush() -> None:
        if batch and not dry_run:
            await publisher.send(list(batch))
        summary.published += len(batch)
        batch.clear()
        if on_progress is not None:
            on_progress(summary, time.monotonic() - started)

    try:
        for record in records:
            summary.read += 1
            if record.payload is None:
                reason = record.error or "unreadable"
            else:
                try:
                    content = json.dumps(record.payload, default=str, sort_keys=True)
                    signal = publisher.prepare(record.payload, signal_id=ids.derive("p95-publish", content))
                    reason = ""
                except InvalidSignal as error:
                    reason = str(error)
            if reason:
                summary.rejected.append((record.line, reason))
                if on_rejected is not None:
                    on_rejected(record.line, reason, len(summary.rejected))
                if on_progress is not None:
                    on_progress(summary, time.monotonic() - started)
                continue
            if rate is not None and not dry_run:
                due = started + (summary.published + len(batch)) / rate
                if due > time.monotonic():
                    await flush()
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
            batch.append(signal)
            if len(batch) >= BATCH_SIZE:
                await flush()
        await flush()
    except BrokerUnavailable as error:
        summary.error = str(error)
    summary.seconds = time.monotonic() - started
    return summary


# -- the command ------------------------------------------------------------------------------------------


def register(app: typer.Typer) -> None:
    app.command("publish")(publish)


def publish(
    path: str = typer.Argument("-", metavar="[FILE|-]", help="JSON lines or CSV; `-` (default) reads stdin."),
    rate: str = typer.Option(None, "--rate", help="Signals per second, e.g. 50/s. Default: as fast as possible."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate only; publish nothing."),
    input_format: str = typer.Option("auto", "--format", help="auto, jsonl or csv."),
    source: str = typer.Option("file", "--source", help="`source` of signals whose line has none."),
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds to wait for the broker before giving up."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Publish signals from a file or stdin; invalid lines are reported by line number and skipped."""
    import logging

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # broker failures are reported below, once
    stderr = Console(stderr=True)
    if input_format not in ("auto", "jsonl", "csv"):
        _fail(stderr, f"--format {input_format!r}: expected auto, jsonl or csv")
    try:
        per_second = parse_rate(rate)
    except ValueError as error:
        _fail(stderr, str(error))
    if path == "-":
        handle: IO[str] = sys.stdin
        total = None
    else:
        file = Path(path)
        if not file.is_file():
            _fail(stderr, f"no such file: {path}")
        handle = file.open(encoding="utf-8", errors="replace", newline="")
        total = _line_count(file)
    try:
        summary = asyncio.run(
            _run(handle, path, input_format, per_second, dry_run, source, timeout, total, stderr)  # type: ignore[arg-type]
        )
    finally:
        if handle is not sys.stdin:
            handle.close()
    _print_summary(stderr, summary)
    if as_json:
        sys.stdout.write(json.dumps(summary.to_json(), indent=2) + "\n")
    if summary.error:  # the broker could not be reached: an expected condition (exit 2)
        raise typer.Exit(2)
    if summary.rejected:
        raise typer.Exit(1)


async def _run(
    handle: IO[str],
    name: str,
    fmt: Format,
    rate: float | None,
    dry_run: bool,
    source: str,
    timeout: float,
    total: int | None,
    stderr: Console,
) -> Summary:
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from phoenix95.connectors.publisher import BrokerUnavailable, SignalPublisher
    from phoenix95.settings import get_settings

    settings = get_settings()
    publisher = SignalPublisher.from_settings(
        settings, producer_name="p95-publish", default_source=source, timeout=timeout, linger_ms=5
    )
    target = "validating" if dry_run else f"publishing to {publisher.topic}"
    progress = Progress(
        SpinnerColumn(),
        TextColumn(target),
        BarColumn(),
        TextColumn(
            "[green]{task.fields[published]}[/green] {task.fields[verb]} · [red]{task.fields[rejected]}[/red] rejected"
        ),
        TextColumn("{task.fields[rate]:>8.0f}/s"),
        TimeElapsedColumn(),
        console=stderr,
        transient=False,
    )
    verb = "valid" if dry_run else "published"
    task = progress.add_task("publish", total=total, published=0, rejected=0, rate=0.0, verb=verb)

    def on_progress(summary: Summary, seconds: float) -> None:
        progress.update(
            task,
            completed=summary.read,
            published=summary.published,
            rejected=len(summary.rejected),
            rate=summary.published / seconds if seconds > 0 else 0.0,
        )

    def on_rejected(line: int, reason: str, count: int) -> None:
        if count <= _SHOWN_REJECTIONS:
            progress.console.print(f"[red]line {line}:[/red] {reason}", markup=True, highlight=False)
        elif count == _SHOWN_REJECTIONS + 1:
            progress.console.print("[dim]... more rejected lines in the summary[/dim]")

    records = read_records(handle, fmt, name="" if name == "-" else name)
    with progress:
        try:
            if not dry_run:
                await publisher.ensure_topic(
                    partitions=settings.kafka.partitions, replication_factor=settings.kafka.replication_factor
                )
                await publisher.start()
            summary = await publish_records(
                records, publisher, rate=rate, dry_run=dry_run, on_progress=on_progress, on_rejected=on_rejected
            )
        except BrokerUnavailable as error:
            summary = Summary(dry_run=dry_run, error=str(error))
        finally:
            await publisher.stop()
        progress.update(task, completed=summary.read, total=summary.read)
    return summary


def _print_summary(console: Console, summary: Summary) -> None:
    from rich.table import Table

    if summary.error and not summary.read:
        console.print(f"[red]error:[/red] {summary.error}", highlight=False)
        return
    verb = "valid (dry run)" if summary.dry_run else "published"
    rate = summary.published / summary.seconds if summary.seconds > 0 else 0.0
    console.print(
        f"[green]{summary.published}[/green] {verb}, [red]{len(summary.rejected)}[/red] rejected "
        f"of {summary.read} lines in {summary.seconds:.2f} s ({rate:.0f}/s)",
        highlight=False,
    )
    if summary.rejected:
        table = Table("reason", "lines", "count", title="rejected", title_justify="left")
        for reason, lines in sorted(summary.reasons().items(), key=lambda item: -len(item[1])):
            shown = ", ".join(str(n) for n in lines[:20]) + (f", ... (+{len(lines) - 20})" if len(lines) > 20 else "")
            table.add_row(reason, shown, str(len(lines)))
        console.print(table)
    if summary.error:
        console.print(f"[red]error:[/red] {summary.error}", highlight=False)


def _fail(console: Console, message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(2)


__all__ = ["Record", "Summary", "parse_rate", "publish_records", "read_records", "register"]
