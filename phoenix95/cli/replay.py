"""`p95 replay`: what the signals would have earned, through the same stage code, on event time."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import typer

replay_app = typer.Typer(
    help="Replay recorded signals and prices through the pipeline's code (backtests, what-ifs).",
    invoke_without_command=True,
    no_args_is_help=False,
)


def register(app: typer.Typer) -> None:
    app.add_typer(replay_app, name="replay")


@replay_app.callback()
def replay(
    ctx: typer.Context,
    signals: str = typer.Option(
        None, "--signals", help="Signals file (JSON lines or CSV), or 'sample' for the bundled one."
    ),
    signals_table: bool = typer.Option(
        False, "--signals-table", help="Replay the signals table (of this P95_NAMESPACE/schema)."
    ),
    signals_topic: str = typer.Option(None, "--signals-topic", help="Replay a time range of this topic."),
    prices: list[str] = typer.Option(
        None, "--prices", help="Candle file(s), SYMBOL-INTERVAL-*.csv[.gz]; bare names read bundled data."
    ),
    prices_topic: str = typer.Option(None, "--prices-topic", help="Market prices from this topic."),
    simulate: list[str] = typer.Option(None, "--simulate", help="Simulated prices SYMBOL:START_PRICE[:VOLATILITY]."),
    since: str = typer.Option(None, "--from", help="Start of the range (ISO-8601 or epoch)."),
    until: str = typer.Option(None, "--until", help="End of the range."),
    mode: str = typer.Option("inprocess", "--mode", help="inprocess (fast) or kafka (the real workers)."),
    speed: float = typer.Option(0.0, "--speed", help="kafka mode: 0 as fast as possible, 1 real time, N times faster."),
    assignments: list[str] = typer.Option(
        None, "--set", help="What-if setting for this run only, e.g. risk.leverage=10."
    ),
    report: Path = typer.Option(None, "--report", help="Write a self-contained HTML report here."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    from phoenix95.cli.console import UserError, print_json, stderr
    from phoenix95.cli.dlq import _parse_time
    from phoenix95.replay import runner, sources
    from phoenix95.settings import get_settings

    if mode not in ("inprocess", "kafka"):
        raise UserError("--mode is inprocess or kafka")
    try:
        request = runner.ReplayRequest(
            mode=mode,  # type: ignore[arg-type]
            signals_file=signals,
            signals_table=signals_table,
            signals_topic=signals_topic,
            prices_files=list(prices or []),
            prices_topic=prices_topic,
            simulate=list(simulate or []),
            since=_parse_time(since),
            until=_parse_time(until),
            overrides=runner.parse_overrides(assignments or []),
            speed=speed,
            report=report,
        )
        summary = _run_with_progress(request, runner, get_settings(), show=not as_json)
    except (sources.SourceError, ValueError) as error:
        raise UserError(str(error)) from None
    if as_json:
        print_json(summary)
    else:
        _print(summary)
        if summary.get("invalid_signal_lines"):
            stderr.print(f"[yellow]{len(summary['invalid_signal_lines'])} invalid signal line(s) skipped[/yellow]")


def _run_with_progress(request: Any, runner: Any, settings: Any, *, show: bool) -> dict[str, Any]:
    if not show:
        return runner.run(request, base=settings)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("replay"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} events/s"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task("replay", total=None, rate="-")
        import time

        started = time.perf_counter()

        def update(done: int, total: int) -> None:
            elapsed = max(time.perf_counter() - started, 1e-9)
            progress.update(task, completed=done, total=total, rate=f"{done / elapsed:,.0f}")

        return runner.run(request, base=settings, on_progress=update)


def _print(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Phoenix95 replay ({summary['mode']})", show_header=False)
    for key in (
        "events",
        "signals",
        "approved",
        "rejected",
        "orders",
        "trades",
        "open_positions",
        "win_rate",
        "pnl",
        "fees",
        "funding",
        "final_equity",
        "max_drawdown",
        "sharpe",
        "sortino",
        "exposure",
        "average_open_positions",
        "events_per_s",
        "elapsed_s",
        "digest",
        "run_id",
        "report",
    ):
        if key in summary:
            table.add_row(key, str(summary[key]))
    for key in ("rejected_by_reason", "close_reasons", "pnl_by_symbol", "settings"):
        if summary.get(key):
            table.add_row(key, str(summary[key]))
    Console().print(table)


@replay_app.command("clean")
def clean(run_id: str = typer.Argument(..., help="The run id a kafka-mode replay printed (r...).")) -> None:
    """Delete a kafka-mode run's topics, consumer groups, PostgreSQL schema and Redis keys."""
    from phoenix95.cli.console import UserError, print_json
    from phoenix95.replay.kafka_mode import clean as clean_run
    from phoenix95.settings import get_settings

    try:
        print_json(asyncio.run(clean_run(get_settings(), run_id)))
    except ValueError as error:
        raise UserError(str(error)) from None
