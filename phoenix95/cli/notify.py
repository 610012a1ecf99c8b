"""`p95 notify test | list | retry`: the notification hub's channels and its outbox."""

from __future__ import annotations

import asyncio
from typing import Any

import typer

notify_app = typer.Typer(help="Notifications: test the channels, list and retry the outbox.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(notify_app, name="notify")


def _channels(url: str | None) -> list[Any]:
    from phoenix95.cli.console import UserError
    from phoenix95.notify.channels import ConfigError, build_channels, load_channel
    from phoenix95.settings import get_settings

    try:
        if url:
            return [load_channel(0, url, name="cli")]
        channels = build_channels(get_settings().notify)
    except ConfigError as error:
        raise UserError(str(error)) from None
    if not channels:
        raise UserError("no notification URLs configured: set P95_NOTIFY__URLS or give one: p95 notify test URL")
    return channels


@notify_app.command("test")
def notify_test(
    url: str = typer.Argument(None, help="An Apprise URL; default: every configured one (P95_NOTIFY__URLS)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Send a test message to one URL, or to every configured one, and report each result."""
    import time

    from phoenix95.cli.console import print_json, stderr
    from phoenix95.notify import events as ev
    from phoenix95.notify import templates
    from phoenix95.notify.channels import send_sync

    results = []
    for channel in _channels(url):
        rendered = templates.render(ev.TEST, {}, markdown=channel.markdown)
        started = time.perf_counter()
        result = send_sync(
            channel.plugin(), rendered.title, rendered.body, markdown=channel.markdown, severity="info", silent=False
        )
        results.append(
            {
                "channel": channel.name,
                "url": channel.masked,
                "ok": result.ok,
                "status": result.status,
                "error": result.error,
                "seconds": round(time.perf_counter() - started, 3),
            }
        )
    if as_json:
        print_json(results)
    else:
        for item in results:
            mark = "[green]ok[/green]" if item["ok"] else f"[red]failed[/red]: {item['error']}"
            stderr.print(f"{item['channel']} ({item['url']}): {mark} in {item['seconds']}s")
    if not all(item["ok"] for item in results):
        raise typer.Exit(1)


async def _with_store(action: Any) -> Any:
    from phoenix95.notify.store import NotificationStore
    from phoenix95.settings import get_settings
    from phoenix95.storage.postgres import Database, migrate

    settings = get_settings()
    await migrate(settings.postgres_url(), settings.postgres.db_schema)
    async with Database(settings.postgres_url(), schema=settings.postgres.db_schema) as database:
        return await action(NotificationStore(database))


@notify_app.command("list")
def notify_list(
    status: str = typer.Option(None, help="Only rows with this status: pending, sent or failed."),
    limit: int = typer.Option(50, help="At most this many, newest first."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The outbox, newest first: one row per event and channel, with status, attempts and last error."""
    from phoenix95.cli.console import UserError, print_json

    if status is not None and status not in ("pending", "sent", "failed"):
        raise UserError(f"--status {status}: expected pending, sent or failed")

    async def listing(store: Any) -> list[dict[str, Any]]:
        return list(await store.listing(status=status, limit=limit))

    rows = asyncio.run(_with_store(listing))
    if as_json:
        print_json(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("created", "channel", "type", "status", "tries", "position", "signal", "last error")
    for row in rows:
        table.add_row(
            str(row["created_at"])[:19],
            row["channel"],
            row["event_type"],
            row["status"],
            str(row["attempts"]),
            (row["position_id"] or "")[:8],
            (row["signal_id"] or "")[:12],
            (row["last_error"] or "")[:60],
        )
    Console().print(table)


@notify_app.command("retry")
def notify_retry(channel: str = typer.Option(None, help="Only this channel.")) -> None:
    """Make failed rows pending again (attempts reset); a running notifications worker sends them."""
    from phoenix95.cli.console import stderr

    async def retry(store: Any) -> int:
        return int(await store.retry_failed(channel))

    count = asyncio.run(_with_store(retry))
    stderr.print(f"{count} failed notification(s) queued again")
