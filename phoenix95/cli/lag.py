"""`p95 lag`: how far behind each consumer group is, in messages and in seconds, with a Burrow-style
status per partition and per group. `--watch` refreshes a table every interval; `--serve` runs the
Prometheus lag exporter. Exits 1 when any group is not OK, so scripts and health checks can use it.

A single report watches the groups for about `--window` seconds: enough to see lag growing (WARN),
offsets going back (REWIND) or not moving (STALL). STOP needs a longer history: `--watch`/`--serve`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

import typer
from aiokafka.errors import KafkaError

if TYPE_CHECKING:
    from rich.table import Table

    from phoenix95.monitoring.monitor import GroupTarget, LagMonitor, LagSnapshot
    from phoenix95.monitoring.offsets import OffsetReader
    from phoenix95.monitoring.status import StatusRules
    from phoenix95.settings import Settings

SINGLE_REPORT_WINDOW_S = 3.0
CONTINUOUS_WINDOW_S = 30.0
_STYLE = {"OK": "green", "WARN": "yellow", "ERR": "red", "STALL": "red", "STOP": "red", "REWIND": "magenta"}


def register(app: typer.Typer) -> None:
    app.command("lag")(lag)


def lag(
    group: list[str] = typer.Option(None, "--group", "-g", help="Consumer group(s). Default: the pipeline's groups."),
    topic: list[str] = typer.Option(None, "--topic", "-t", help="Only these topic(s) (full or base name)."),
    all_groups: bool = typer.Option(False, "--all", help="Every consumer group of the cluster."),
    as_json: bool = typer.Option(False, "--json", help="Print one report as a JSON list of partition and group rows."),
    watch: bool = typer.Option(False, "--watch", help="Live table, refreshed every interval."),
    serve: bool = typer.Option(False, "--serve", help="Run the Prometheus lag exporter."),
    host: str = typer.Option(None, "--host", help="Exporter address (default: P95_METRICS__HOST)."),
    port: int = typer.Option(9600, "--port", help="Exporter port."),
    interval: float = typer.Option(1.0, "--interval", min=0.05, help="Seconds between samples."),
    window: float = typer.Option(
        None, "--window", min=0.1, help="Seconds of samples a status is judged on (default 30; 3 for one report)."
    ),
) -> None:
    """Consumer lag per group, topic and partition: offsets, lag in messages and seconds, status."""
    from phoenix95.monitoring.status import StatusRules
    from phoenix95.settings import get_settings

    settings = get_settings()
    continuous = watch or serve
    rules = StatusRules(window_s=window or (CONTINUOUS_WINDOW_S if continuous else SINGLE_REPORT_WINDOW_S))
    selection = _Selection(group or [], topic or [], all_groups)
    if as_json and continuous:
        from phoenix95.cli.console import UserError

        raise UserError("--json prints a single report: use it without --watch/--serve")
    try:
        if serve:
            asyncio.run(_serve(settings, selection, rules, host or settings.metrics.host, port, interval))
            return
        snapshot = asyncio.run(
            _watch(settings, selection, rules, interval) if watch else _report(settings, selection, rules, interval)
        )
    except (TimeoutError, KafkaError, OSError) as error:
        raise RuntimeError(f"cannot read offsets from {settings.kafka.bootstrap_servers}: {error}") from error
    if not watch and snapshot is not None:
        if as_json:
            from phoenix95.cli.console import print_json

            print_json(snapshot.rows())
        else:
            from rich.console import Console

            Console().print(render(snapshot))
    if snapshot is not None and not snapshot.ok:
        raise typer.Exit(1)


class _Selection:
    def __init__(self, groups: Sequence[str], topics: Sequence[str], all_groups: bool):
        self.groups = list(groups)
        self.topics = list(topics)
        self.all_groups = all_groups

    async def targets(self, reader: OffsetReader, settings: Settings) -> list[GroupTarget]:
        from phoenix95.monitoring.monitor import GroupTarget, discover_targets, pipeline_targets
        from phoenix95.schemas import topics as topic_names
        from phoenix95.schemas.topics import Topics

        pipeline = pipeline_targets(settings.namespace)
        names = Topics(settings.namespace)
        wanted = [names.name(t) if t in topic_names.ALL else t for t in self.topics]
        if not (self.groups or self.all_groups):
            chosen = pipeline
        elif wanted:  # named topics: watch any group on them, committed there or not
            known = {target.group: target for target in pipeline}
            chosen = [known.get(g, GroupTarget(g, tuple(wanted))) for g in self.groups or await reader.groups()]
        else:
            chosen = await discover_targets(reader, self.groups or None, pipeline)
        if wanted:
            chosen = [target.only(wanted) for target in chosen]
            chosen = [target for target in chosen if target.topics]
        return chosen


async def _report(settings: Settings, selection: _Selection, rules: StatusRules, interval: float) -> LagSnapshot:
    from phoenix95.monitoring.monitor import LagMonitor
    from phoenix95.monitoring.offsets import OffsetReader

    async with OffsetReader(settings.kafka.bootstrap_servers) as reader:
        monitor = LagMonitor(reader, await selection.targets(reader, settings), rules=rules)
        samples = max(1, round(rules.window_s / interval))
        snapshot = await monitor.sample()
        for _ in range(samples - 1):
            await asyncio.sleep(max(0.0, interval - monitor.last_duration_s))
            snapshot = await monitor.sample()
        return snapshot


async def _watch(settings: Settings, selection: _Selection, rules: StatusRules, interval: float) -> LagSnapshot | None:
    from rich.console import Console
    from rich.live import Live

    from phoenix95.monitoring.monitor import LagMonitor
    from phoenix95.monitoring.offsets import OffsetReader

    async with OffsetReader(settings.kafka.bootstrap_servers) as reader:
        monitor = LagMonitor(reader, await selection.targets(reader, settings), rules=rules)
        with Live(console=Console(), auto_refresh=False) as live:

            def show(snapshot: LagSnapshot) -> None:
                live.update(render(snapshot, title=f"consumer lag — {time.strftime('%H:%M:%S')}"), refresh=True)

            await _until_signalled(monitor.run(interval, on_snapshot=show))
        return monitor.latest


async def _serve(
    settings: Settings, selection: _Selection, rules: StatusRules, host: str, port: int, interval: float
) -> None:
    from rich.console import Console

    from phoenix95.monitoring.exporter import serve
    from phoenix95.monitoring.monitor import LagMonitor
    from phoenix95.monitoring.offsets import OffsetReader

    async with OffsetReader(settings.kafka.bootstrap_servers) as reader:
        monitor: LagMonitor = LagMonitor(reader, await selection.targets(reader, settings), rules=rules)
        groups = ", ".join(target.group for target in monitor.targets) or "no groups"
        Console(stderr=True).print(f"lag exporter on http://{host}:{port}/metrics ({groups})")
        heartbeats = _heartbeats(settings)
        try:
            await _until_signalled(serve(monitor, host=host, port=port, interval_s=interval, heartbeats=heartbeats))
        finally:
            if heartbeats is not None:
                await heartbeats.redis.close()


def _heartbeats(settings: Settings) -> Any:
    """The workers' heartbeats (every stage of the registry), when Redis is configured."""
    from phoenix95.monitoring.heartbeats import HeartbeatWatch
    from phoenix95.settings import ServiceNotConfigured
    from phoenix95.storage.redis_state import RedisState
    from phoenix95.streams.stages import BY_NAME

    try:
        url = settings.redis_url()
    except ServiceNotConfigured:
        return None
    return HeartbeatWatch(RedisState.from_url(url, prefix=settings.redis.prefix), tuple(BY_NAME))


async def _until_signalled(work: Coroutine[Any, Any, Any]) -> None:
    """Run until SIGINT/SIGTERM (a container stop), then cancel the work and return."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def render(snapshot: LagSnapshot, title: str = "consumer lag") -> Table:
    from rich.table import Table

    table = Table(title=title)
    table.add_column("group / topic", overflow="fold")
    for name in ("partition", "committed", "end", "lag", "lag (s)"):
        table.add_column(name, justify="right")
    table.add_column("status")
    for row in snapshot.rows():
        status = f"[{_STYLE[row['status']]}]{row['status']}[/]"
        seconds = "?" if row["lag_seconds"] is None else f"{row['lag_seconds']:.1f}"
        if row["kind"] == "group":
            stage = f" [dim]({row['stage']})[/dim]" if row["stage"] else ""
            worst = "" if row["worst"] == row["status"] else f" ({row['worst']})"
            table.add_row(
                f"[bold]{row['group']}[/bold]{stage}",
                f"[dim]{row['partitions']}[/dim]",
                "",
                "",
                f"[bold]{row['lag']}[/bold]",
                f"[bold]{seconds}[/bold]",
                status + worst,
                end_section=True,
            )
        else:
            committed = "-" if row["committed"] is None else str(row["committed"])
            table.add_row(
                f"  {row['topic']}", str(row["partition"]), committed, str(row["end"]), str(row["lag"]), seconds, status
            )
    return table
