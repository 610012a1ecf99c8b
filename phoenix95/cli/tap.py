"""`p95 tap`: read topics like kcat, decoded, filtered, and follow one signal through the stages.

Records go to stdout (pipe-friendly: nothing else is written there); notes and the summary go to
stderr. Reading never joins a consumer group and never commits offsets.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from phoenix95.tap.filters import FilterSpec

HELP = """Read topics without joining a consumer group: decoded, filtered, as pretty blocks or JSON lines.

TOPIC is a topic name (p95.signals; the namespace prefix is added when needed), a stage name
(analysis, risk, execution, positions: the topic that stage consumes) or `all`.

\b
Examples:
  p95 tap p95.risk.verdicts --from -20 -e                       the last 20 verdicts per partition
  p95 tap all --signal 3f2a... -e                               one signal through every stage
  p95 tap p95.risk.verdicts --where 'plan.notional > 100 and decision == "APPROVED"'
  p95 tap p95.orders --from 2026-11-24T10:00Z --until 2026-11-24T11:00Z -F json --fields symbol,status
  p95 tap p95.signals --from 15m --where '$error != null'       what could not be decoded lately
  p95 tap --trace 3f2a...                                       where is my signal?

--where: comparisons (== != < <= > >=; decimals in strings compare as numbers, times as times),
and / or / not, in, not in, contains, startswith, endswith, matches (a regular expression);
fields by dotted path (plan.notional, reasons[0]); the message itself as $topic $partition $offset
$timestamp $key $schema $error $headers.NAME. Never evaluated as Python.
"""


def register(app: typer.Typer) -> None:
    app.command("tap", help=HELP)(tap)


def tap(
    topics: list[str] = typer.Argument(None, metavar="TOPIC...", show_default=False),
    start: str = typer.Option(
        "beginning",
        "--from",
        "-o",
        help="beginning | end | OFFSET | -N (N before the end) | TIME (ISO-8601, epoch ms, or a duration ago: 15m).",
    ),
    until: str = typer.Option(None, "--until", help="Stop at records later than this time (ISO-8601, epoch ms, 15m)."),
    partition: list[int] = typer.Option(None, "--partition", "-p", help="Only this partition (repeatable)."),
    count: int = typer.Option(None, "--count", "-c", min=1, help="Stop after this many records shown."),
    exit_at_end: bool = typer.Option(
        False, "--exit-at-end", "-e", help="Stop at the end offsets the partitions had at the start."
    ),
    follow: bool = typer.Option(
        False, "--follow", "-f", help="Wait for new records (the default without --count or --exit-at-end)."
    ),
    key: list[str] = typer.Option(None, "--key", "-k", help="Only records with this key (repeatable)."),
    symbol: list[str] = typer.Option(None, "--symbol", "-s", help="Only records of this symbol (repeatable)."),
    signal: list[str] = typer.Option(
        None, "--signal", help="Only records of this signal: its id or correlation_id (repeatable)."
    ),
    header: list[str] = typer.Option(None, "--header", "-H", help="Only records with this header: name=value or name."),
    where: str = typer.Option(
        None,
        "--where",
        "-w",
        help="Only records matching this expression, e.g. 'plan.notional > 100 and side == \"long\"'.",
    ),
    output_format: str = typer.Option(
        None, "--format", "-F", help="pretty (default on a terminal), json (one object per line) or raw (value bytes)."
    ),
    fields: str = typer.Option(None, "--fields", help="Show only these fields: a,b.c,$offset."),
    trace: str = typer.Option(None, "--trace", help="Show where this signal is in each stage (ignores TOPIC)."),
    jobs: int = typer.Option(0, "--jobs", "-j", min=0, help="Decoding processes (0: one per core for large reads)."),
    client: str = typer.Option("auto", "--client", help="auto | confluent | aiokafka.", hidden=True),
    color: bool = typer.Option(None, "--color/--no-color", help="Colour in pretty output (default: on a terminal)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No notes or summary on stderr."),
) -> None:
    from aiokafka.errors import KafkaConnectionError
    from rich.console import Console

    from phoenix95.settings import get_settings
    from phoenix95.tap.filters import FilterSpec

    stderr = Console(stderr=True, quiet=quiet, soft_wrap=True, highlight=False)
    try:
        if trace is not None:
            if topics:
                stderr.print("[dim]--trace reads the pipeline's own topics; TOPIC is ignored[/dim]")
            _run_trace(trace, start=start, output_format=output_format, color=color)
            return
        filters = FilterSpec(
            keys=tuple(key or ()),
            symbols=tuple(symbol or ()),
            signals=tuple(signal or ()),
            headers=tuple(header or ()),
            where=where,
        )
        _run_tap(
            topics or [],
            start=start,
            until=until,
            partitions=partition or [],
            count=count,
            exit_at_end=exit_at_end,
            follow=follow,
            filters=filters,
            output_format=output_format,
            fields=fields,
            jobs=jobs,
            client=client,
            color=color,
            stderr=stderr,
        )
    except KafkaConnectionError:
        raise _fail(f"cannot reach the broker at {get_settings().kafka.bootstrap_servers}", code=1) from None
    except BrokenPipeError:
        _quiet_stdout()
    except KeyboardInterrupt:
        pass


def _fail(message: str, code: int = 2) -> typer.Exit:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {escape(message)}", highlight=False)
    return typer.Exit(code)


def _quiet_stdout() -> None:
    """The reader went away (`| head`): point stdout at /dev/null so the final flush is silent."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _format(requested: str | None) -> str:
    if requested is None:
        return "pretty" if sys.stdout.isatty() else "json"
    if requested not in ("pretty", "json", "raw"):
        raise _fail(f"--format {requested!r}: expected pretty, json or raw")
    return requested


def _run_tap(
    topics: list[str],
    *,
    start: str,
    until: str | None,
    partitions: list[int],
    count: int | None,
    exit_at_end: bool,
    follow: bool,
    filters: FilterSpec,
    output_format: str | None,
    fields: str | None,
    jobs: int,
    client: str,
    color: bool | None,
    stderr: Console,
) -> None:
    import asyncio

    from rich.markup import escape

    from phoenix95.settings import get_settings
    from phoenix95.tap.expressions import ExpressionError
    from phoenix95.tap.loop import ReadOptions
    from phoenix95.tap.output import formatter_for
    from phoenix95.tap.plan import PlanError, existing_topics, plan_now, resolve_topics
    from phoenix95.tap.positions import PositionError, format_ms, parse_start, parse_time
    from phoenix95.tap.render import RenderOptions
    from phoenix95.tap.run import read

    if not topics:
        raise _fail("name at least one TOPIC (or a stage name, or `all`), or use --trace SIGNAL_ID")
    if exit_at_end and follow:
        raise _fail("--exit-at-end and --follow contradict each other")
    if client not in ("auto", "confluent", "aiokafka"):
        raise _fail(f"--client {client!r}: expected auto, confluent or aiokafka")
    chosen_format = _format(output_format)
    try:
        start_spec = parse_start(start)
        until_ms = parse_time(until) if until is not None else None
    except PositionError as error:
        raise _fail(str(error)) from None
    field_list = tuple(f.strip() for f in fields.split(",") if f.strip()) if fields else ()
    try:
        filters.validate()
        formatter_for(chosen_format, fields=field_list)  # type: ignore[arg-type]
    except ExpressionError as error:
        raise _fail(f"--where: {error}") from None
    except ValueError as error:
        raise _fail(str(error)) from None

    settings = get_settings()
    bootstrap = settings.kafka.bootstrap_servers
    try:
        names, notes = resolve_topics(topics, asyncio.run(existing_topics(bootstrap)), settings.namespace)
        plan = plan_now(
            bootstrap,
            names,
            start=start_spec,
            until_ms=until_ms,
            partitions=partitions,
            exit_at_end=exit_at_end,
        )
    except PlanError as error:
        raise _fail(str(error)) from None
    for note in [*notes, *plan.notes]:
        stderr.print(f"[dim]{escape(note)}[/dim]")
    width = stderr.width if sys.stdout.isatty() else 120
    render = RenderOptions(
        format=chosen_format,  # type: ignore[arg-type]
        fields=field_list,
        filters=filters,
        color=sys.stdout.isatty() if color is None else color,
        width=width,
        schema_registry_url=settings.kafka.schema_registry_url,
    )
    following = not exit_at_end and (follow or count is None) and until_ms is None
    until_text = f" until {format_ms(until_ms)}" if until_ms is not None else ""
    mode = "following" if following else ("to the end offsets" if exit_at_end else "")
    stderr.print(
        f"[dim]{escape(', '.join(names))}: {len(plan.partitions)} partition(s) from {start_spec.describe()}"
        f"{until_text}{' ' + mode if mode else ''}[/dim]"
    )
    stats = read(
        bootstrap,
        plan,
        render,
        ReadOptions(count=count, until_ms=until_ms, jobs=jobs, client=client),  # type: ignore[arg-type]
        sys.stdout.buffer,
    )
    rate = stats.read / stats.seconds if stats.seconds > 0 else 0.0
    stderr.print(
        f"[dim]{stats.shown} shown of {stats.read} read in {stats.seconds:.2f}s ({rate:,.0f} msg/s, "
        f"{stats.client or 'no client'}, {stats.jobs} decoding process(es))[/dim]"
    )


def _run_trace(signal_id: str, *, start: str, output_format: str | None, color: bool | None) -> None:
    from phoenix95.settings import get_settings
    from phoenix95.tap.positions import PositionError, parse_start
    from phoenix95.tap.trace import render_trace_json, render_trace_pretty, trace_signal

    chosen_format = _format(output_format)
    try:
        start_spec = parse_start(start)
    except PositionError as error:
        raise _fail(str(error)) from None
    settings = get_settings()
    report = trace_signal(
        settings.kafka.bootstrap_servers,
        settings.namespace,
        signal_id,
        start=start_spec,
        schema_registry_url=settings.kafka.schema_registry_url,
    )
    if chosen_format == "json":
        sys.stdout.write(render_trace_json(report) + "\n")
    else:
        sys.stdout.write(render_trace_pretty(report, color=sys.stdout.isatty() if color is None else color))
    sys.stdout.flush()
    if not report.found:
        raise typer.Exit(1)
