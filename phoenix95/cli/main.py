"""The `p95` command. One Typer app; each area is a sub-app or command in its own module, and heavy
imports happen inside the commands so `p95 --help` stays fast."""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console

from phoenix95.cli.console import UserError, print_json, stderr

app = typer.Typer(
    name="p95",
    help="Phoenix95: trading signals -> Phoenix-95 analysis -> risk verdicts -> paper orders -> position ticks.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
config_app = typer.Typer(help="Settings.", no_args_is_help=True)
db_app = typer.Typer(help="PostgreSQL schema.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    for noisy in ("aiokafka", "kafka", "faust", "mode", "urllib3", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


@app.callback()
def main_callback(
    log_level: str = typer.Option(
        "WARNING", "--log-level", envvar="P95_LOG_LEVEL", help="DEBUG, INFO, WARNING, ERROR."
    ),
) -> None:
    configure_logging(log_level)


# -- config --------------------------------------------------------------------------------------------


@config_app.command("show")
def config_show(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Print the effective settings, secrets masked."""
    from phoenix95.settings import get_settings

    data = get_settings().masked()
    if as_json:
        print_json(data)
        return
    from rich.pretty import Pretty

    Console().print(Pretty(data, expand_all=True))


# -- embedded stack -------------------------------------------------------------------------------------


@app.command()
def up() -> None:
    """Start the embedded stack (broker, PostgreSQL, Redis, time-series store) in $P95_HOME."""
    from phoenix95.settings import get_settings
    from phoenix95.stack.manager import Stack

    settings = get_settings()
    endpoints = Stack(settings.home).up(on_step=lambda message: stderr.print(f"[dim]{message}[/dim]"))
    for name, endpoint in endpoints.items():
        stderr.print(f"[green]✓[/green] {name:<11} {endpoint.url or '-'}  {endpoint.note}")
    stderr.print(f"endpoints written to {settings.home / 'endpoints.json'}")


@app.command()
def status(
    as_json: bool = typer.Option(False, "--json", help="One object keyed kafka, postgres, redis, timeseries."),
) -> None:
    """Show each service of the stack with its endpoint, pid and health."""
    from phoenix95.settings import get_settings
    from phoenix95.stack.manager import Stack

    report = Stack(get_settings().home).status()
    if as_json:
        print_json(report)
    else:
        from rich.table import Table

        table = Table("service", "url", "pid", "health", "note")
        for name, item in report.items():
            health = "[green]healthy[/green]" if item["healthy"] else "[red]down[/red]"
            table.add_row(name, str(item["url"] or "-"), str(item["pid"] or "-"), health, item.get("note") or "")
        Console().print(table)
    if not all(item["healthy"] or item.get("kind") == "none" for item in report.values()):
        raise typer.Exit(1)


@app.command()
def down() -> None:
    """Stop exactly the processes `p95 up` started."""
    from phoenix95.settings import get_settings
    from phoenix95.stack.manager import Stack

    stopped = Stack(get_settings().home).down()
    stderr.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


# -- database -------------------------------------------------------------------------------------------


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply the PostgreSQL migrations (idempotent; safe to run concurrently)."""
    import asyncio

    from phoenix95.settings import get_settings
    from phoenix95.storage.postgres import migrate

    settings = get_settings()
    applied = asyncio.run(migrate(settings.postgres_url(), settings.postgres.db_schema))
    if applied:
        stderr.print(f"applied: {', '.join(applied)} (schema {settings.postgres.db_schema})")
    else:
        stderr.print(f"up to date (schema {settings.postgres.db_schema})")


# -- workers and demo -----------------------------------------------------------------------------------


@app.command()
def worker(
    stage: list[str] = typer.Option(
        None,
        "--stage",
        "-s",
        help="Stage(s) to run: analysis, risk, execution, positions (default: all); feed: the live Binance market feed.",
    ),
    web_port: int = typer.Option(
        None,
        "--web-port",
        help="Serve /metrics on this port; with several stages the first gets it, the next ones consecutive ports.",
    ),
    log_level: str = typer.Option("info", "--log-level"),
    instances: int = typer.Option(
        1, "--instances", help="Processes per stage, sharing the stage's consumer group (docs/scaling.md)."
    ),
) -> None:
    """Run pipeline stages. One stage runs in this process; several run as supervised processes."""
    from phoenix95.cli.worker import run_worker

    run_worker(stage or [], web_port=web_port, log_level=log_level, instances=instances)


@app.command()
def demo(
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
    keep: bool = typer.Option(False, "--keep", help="Leave the stack running afterwards."),
    timeout: float = typer.Option(240.0, help="Seconds to wait for every signal to reach its final state."),
) -> None:
    """Run the demo: bring up the embedded stack, start the workers, replay market data, publish sample
    signals (valid and malformed), wait until each reached its final state, print a summary."""
    from phoenix95.cli.demo import run_demo

    summary = run_demo(keep=keep, timeout=timeout, progress=None if as_json else stderr)
    if as_json:
        print_json(summary)
    if summary.get("error"):
        raise typer.Exit(1)


#: Command modules, each with `register(app)`: one module per area keeps this file small.
COMMAND_MODULES = (
    "publish",
    "serve",
    "tap",
    "lag",
    "risk",
    "trading",
    "dlq",
    "stores",
    "replay",
    "bench",
    "notify",
    "audit",
    "compliance",
    "exchange",
    "feed",
)


def _register_commands() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f"phoenix95.cli.{name}").register(app)


_register_commands()


def main() -> None:
    try:
        app()
    except UserError as error:
        stderr.print(f"[red]error:[/red] {error}")
        sys.exit(2)
    except RuntimeError as error:
        stderr.print(f"[red]error:[/red] {error}")
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
