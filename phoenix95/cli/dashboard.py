"""`p95 dashboard`: serve the web dashboard; `p95 dashboard user add`: its users;
`p95 dashboard login-link`: a one-time login URL."""

from __future__ import annotations

import asyncio
import importlib.util
import os
from typing import Any

import typer

dashboard_app = typer.Typer(
    help="The web dashboard (default port 8110) and its users.", invoke_without_command=True, no_args_is_help=False
)
user_app = typer.Typer(help="Dashboard users (passwords hashed with argon2id).", no_args_is_help=True)
dashboard_app.add_typer(user_app, name="user")


def register(app: typer.Typer) -> None:
    app.add_typer(dashboard_app, name="dashboard")


@dashboard_app.callback()
def dashboard(
    ctx: typer.Context,
    host: str = typer.Option(None, "--host", help="Address to listen on. Default: P95_DASHBOARD__HOST (127.0.0.1)."),
    port: int = typer.Option(None, "--port", help="Port. Default: P95_DASHBOARD__PORT (8110)."),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level."),
) -> None:
    """Serve the dashboard: Overview, Positions (live), Signals (with traces), Risk, Backtests. In
    production it refuses to start without a user (`p95 dashboard user add`); there is no default user."""
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from phoenix95.api.accounts import user_count
    from phoenix95.cli.api import _settings, _with_db
    from phoenix95.cli.console import UserError, stderr
    from phoenix95.dashboard.app import create_app

    settings = _settings()
    users = asyncio.run(_with_db(user_count))
    serve_host, serve_port = host or settings.dashboard.host, port or settings.dashboard.port
    if users == 0 and settings.environment == "production":
        raise UserError(
            "refusing to run in production without a dashboard user: `p95 dashboard user add NAME --role operator`"
        )
    url = f"http://{serve_host}:{serve_port}"
    stderr.print(f"dashboard on {url}")
    if users == 0:
        token = asyncio.run(_login_link("operator"))
        stderr.print(f"no users yet (development): log in once with {url}/login/once?token={token}")
    from phoenix95.monitoring.health import registered

    try:
        # registered while it serves: `p95 status` lists it with its port, health and uptime
        with registered(settings.home, "dashboard", port=serve_port, host=serve_host, kind="server"):
            uvicorn.run(
                create_app(settings),
                host=serve_host,
                port=serve_port,
                log_level=log_level.lower(),
                server_header=False,
                access_log=False,
                loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
            )
    except OSError as error:
        raise UserError(f"cannot serve on {serve_host}:{serve_port}: {error}") from None


async def _login_link(role: str, name: str = "demo") -> str:
    from phoenix95.dashboard.sessions import one_time_link
    from phoenix95.settings import get_settings
    from phoenix95.storage.redis_state import RedisState

    settings = get_settings()
    redis = RedisState.from_url(settings.redis_url(), prefix=settings.redis.prefix)
    try:
        return await one_time_link(redis, role, name)
    finally:
        await redis.close()


def login_url(role: str = "operator", name: str = "demo") -> str:
    """A one-time login URL for the configured dashboard (used by `p95 demo --keep`)."""
    from phoenix95.settings import get_settings

    settings = get_settings()
    token = asyncio.run(_login_link(role, name))
    return f"http://{settings.dashboard.host}:{settings.dashboard.port}/login/once?token={token}"


@dashboard_app.command("login-link")
def login_link(role: str = typer.Option("operator", "--role", help="viewer or operator.")) -> None:
    """Print a login URL that works once within an hour."""
    from phoenix95.cli.console import UserError

    if role not in ("viewer", "operator"):
        raise UserError("--role is viewer or operator")
    print(login_url(role))


@user_app.command("add")
def user_add(
    name: str = typer.Argument(..., help="User name (letters, digits, _ . @ -)."),
    role: str = typer.Option(..., "--role", help="viewer (read) or operator (also halt/reduce/resume, replays)."),
    password_env: str = typer.Option(
        None, "--password-env", help="Read the password from this environment variable instead of a prompt."
    ),
) -> None:
    """Create a dashboard user (or reset its password and role)."""
    from phoenix95.api.accounts import add_user
    from phoenix95.cli.api import _with_db
    from phoenix95.cli.console import UserError, stderr

    if role not in ("viewer", "operator"):
        raise UserError("--role is viewer or operator")
    if password_env:
        password = os.environ.get(password_env, "")
        if not password:
            raise UserError(f"{password_env} is empty or not set")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)

    async def work(db: Any) -> None:
        await add_user(db, name, password, role)

    try:
        asyncio.run(_with_db(work))
    except ValueError as error:
        raise UserError(str(error)) from None
    stderr.print(f"dashboard user {name} ({role}) saved")
