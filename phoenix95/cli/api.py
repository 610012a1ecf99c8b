"""`p95 api`: serve the REST API; `p95 api key create | revoke | list`: its API keys."""

from __future__ import annotations

import asyncio
import getpass
import importlib.util
from typing import Any

import typer

api_app = typer.Typer(
    help="The REST API (default port 8100) and its API keys.", invoke_without_command=True, no_args_is_help=False
)
key_app = typer.Typer(help="API keys (stored hashed; a key is printed once).", no_args_is_help=True)
api_app.add_typer(key_app, name="key")


def register(app: typer.Typer) -> None:
    app.add_typer(api_app, name="api")


@api_app.callback()
def api(
    ctx: typer.Context,
    host: str = typer.Option(None, "--host", help="Address to listen on. Default: P95_API__HOST (127.0.0.1)."),
    port: int = typer.Option(None, "--port", help="Port. Default: P95_API__PORT (8100)."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
) -> None:
    """Serve the REST API: signals, verdicts, orders, trades, positions, account, trading state, dead
    letters, lag, traces and replays; OpenAPI at /docs. Every call needs an API key."""
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from phoenix95.api.app import create_app
    from phoenix95.cli.console import UserError, stderr

    settings = _settings()
    serve_host, serve_port = host or settings.api.host, port or settings.api.port
    asyncio.run(_with_db(lambda db: asyncio.sleep(0)))  # the schema is migrated (idempotent)
    app = create_app(settings)
    stderr.print(f"API on http://{serve_host}:{serve_port}  (OpenAPI: http://{serve_host}:{serve_port}/docs)")
    from phoenix95.monitoring.health import registered

    try:
        # registered while it serves: `p95 status` lists it with its port, health and uptime
        with registered(settings.home, "api", port=serve_port, host=serve_host, kind="server"):
            uvicorn.run(
                app,
                host=serve_host,
                port=serve_port,
                log_level=log_level.lower(),
                server_header=False,
                loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
                access_log=False,
            )
    except OSError as error:
        raise UserError(f"cannot serve on {serve_host}:{serve_port}: {error}") from None


def _settings() -> Any:
    from phoenix95.cli.console import UserError
    from phoenix95.settings import get_settings

    settings = get_settings()
    try:
        settings.check_production()
        settings.postgres_url()
        settings.redis_url()
    except RuntimeError as error:
        raise UserError(str(error)) from None
    return settings


async def _with_db(work: Any) -> Any:
    from phoenix95.storage.postgres import Database, migrate

    settings = _settings()
    await migrate(settings.postgres_url(), settings.postgres.db_schema)
    async with Database(settings.postgres_url(), schema=settings.postgres.db_schema) as db:
        return await work(db)


@key_app.command("create")
def key_create(
    role: str = typer.Option(..., "--role", help="viewer (read) or operator (read, halt/reduce/resume, replays)."),
    label: str = typer.Option("", "--label", help="What the key is for."),
) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    from phoenix95.api.accounts import create_key
    from phoenix95.cli.console import UserError, stderr

    if role not in ("viewer", "operator"):
        raise UserError("--role is viewer or operator")
    key_id, key = asyncio.run(
        _with_db(lambda db: create_key(db, role, label=label, created_by=f"cli:{getpass.getuser()}"))
    )
    stderr.print(f"API key {key_id} ({role}) created; it is shown only now:")
    print(key)


@key_app.command("revoke")
def key_revoke(key_id: str = typer.Argument(..., help="The key id (k...).")) -> None:
    """Revoke an API key (it is refused from the next request on)."""
    from phoenix95.api.accounts import revoke_key
    from phoenix95.cli.console import UserError, stderr

    if not asyncio.run(_with_db(lambda db: revoke_key(db, key_id))):
        raise UserError(f"no active API key {key_id}")
    stderr.print(f"API key {key_id} revoked")


@key_app.command("list")
def key_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """List the API keys (ids, roles, labels; never the keys)."""
    from phoenix95.api.accounts import list_keys
    from phoenix95.api.reads import plain
    from phoenix95.cli.console import print_json, stderr

    keys = asyncio.run(_with_db(list_keys))
    if as_json:
        print_json(plain(keys))
        return
    for key in keys:
        state = f"revoked {key['revoked_at']:%Y-%m-%d %H:%M}" if key["revoked_at"] else "active"
        stderr.print(f"{key['key_id']}  {key['role']:<8}  {state:<24}  {key['label']}")
