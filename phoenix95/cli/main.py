"""The `p95` command. One Typer app; each area is a sub-app or command in its own module, and heavy
imports happen inside the commands so `p95 --help` stays fast."""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console

from phoenix95.cli.console import print_json, stderr

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
    endpoints = Stack(settings.home, timeseries_retention_days=settings.influx.retention_days).up(
        on_step=lambda message: stderr.print(f"[dim]{message}[/dim]")
    )
    for name, endpoint in endpoints.items():
        stderr.print(f"[green]✓[/green] {name:<11} {endpoint.url or '-'}  {endpoint.note}")
    stderr.print(f"endpoints written to {settings.home / 'endpoints.json'}")
    from phoenix95.stack.ready import make_ready

    get_settings.cache_clear()  # the endpoints just written
    for line in make_ready(get_settings()):
        stderr.print(f"[green]✓[/green] {line}")
    stderr.print("ready: try `p95 doctor`, `p95 worker --feed`, `p95 serve`, `p95 status`")


@app.command()
def status(
    as_json: bool = typer.Option(
        False, "--json", help="One object keyed kafka, postgres, redis, timeseries, and components (a list)."
    ),
) -> None:
    """Show each service of the stack (endpoint, pid, health) and every running component (workers per
    stage, webhook, feed, ...: port, health, uptime). Exit status 1 when something is down."""
    from phoenix95.cli.components import component_rows
    from phoenix95.settings import get_settings
    from phoenix95.stack.manager import Stack

    home = get_settings().home
    report = Stack(home).status()
    components = component_rows(home)
    if as_json:
        print_json({**report, "components": components})
    else:
        from rich.table import Table

        table = Table("service", "url", "pid", "health", "note")
        for name, item in report.items():
            health = "[green]healthy[/green]" if item["healthy"] else "[red]down[/red]"
            table.add_row(name, str(item["url"] or "-"), str(item["pid"] or "-"), health, item.get("note") or "")
        Console().print(table)
        if components:
            table = Table("component", "pid", "port", "health", "uptime", "not ready")
            for row in components:
                color = {"ready": "green", "not_ready": "red"}.get(row["health"], "yellow")
                table.add_row(
                    row["name"],
                    str(row["pid"]),
                    str(row["port"] or "-"),
                    f"[{color}]{row['health']}[/{color}]",
                    row["uptime"],
                    ", ".join(row["down"]),
                )
            Console().print(table)
        else:
            stderr.print("no components running (start them with `p95 worker --feed` and `p95 serve`)")
    services_ok = all(item["healthy"] or item.get("kind") == "none" for item in report.values())
    if not services_ok or any(row["health"] == "not_ready" for row in components):
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
        help="Stage(s) to run: analysis, risk, execution, positions (default: these four); notifications, "
        "compliance; feed (market data: simulated prices on paper, Binance's streams with a live exchange).",
    ),
    feed: bool = typer.Option(False, "--feed", help="Also run the simulated market-data feed (P95_FEED__*)."),
    web_port: int = typer.Option(
        None,
        "--web-port",
        help="Serve /health and /metrics on this port (0: free ports); with several stages the first gets it, "
        "the next ones consecutive ports. Default: each stage's port (P95_PORTS__<STAGE>: analysis 8103, "
        "risk 8104, execution 8106, positions 8107, feed 8102).",
    ),
    no_web: bool = typer.Option(False, "--no-web", help="Serve no /health and /metrics."),
    check: bool = typer.Option(
        False, "--check", help="Check the stores and ports, create the topics, migrate; then exit without running."
    ),
    log_level: str = typer.Option("info", "--log-level"),
    instances: int = typer.Option(
        1, "--instances", help="Processes per stage, sharing the stage's consumer group (docs/scaling.md)."
    ),
) -> None:
    """Run pipeline stages. One stage runs in this process; several run as supervised processes."""
    from phoenix95.cli.worker import run_worker

    run_worker(
        stage or [],
        web_port=web_port,
        log_level=log_level,
        instances=instances,
        web=not no_web,
        feed=feed,
        check=check,
    )


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
    "market_feed",
    "doctor",
    "api",
    "dashboard",
)


def _register_commands() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f"phoenix95.cli.{name}").register(app)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Run `p95`. An expected failure (cli/errors.py) is one or two lines on stderr and exit status 2;
    an unexpected one is one line and exit status 1, and its traceback with `--log-level DEBUG`."""
    from phoenix95.cli.errors import explain

    try:
        app(args=argv, prog_name="p95")
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as error:
        debug = logging.getLogger().isEnabledFor(logging.DEBUG)
        message = explain(error)
        if message is None:
            if debug:
                raise
            stderr.print(
                f"[red]error:[/red] unexpected {type(error).__name__}: {str(error).strip()[:300]}\n"
                "Run it again with `--log-level DEBUG` for the traceback (and report it).",
                highlight=False,
            )
            sys.exit(1)
        if debug:
            import traceback

            traceback.print_exception(error)
        stderr.print(f"[red]error:[/red] {message}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
