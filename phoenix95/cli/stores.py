"""`p95 redis rebuild` and `p95 influx setup`: the hot state and the time-series store."""

from __future__ import annotations

import asyncio

import typer

redis_app = typer.Typer(help="Redis hot state.", no_args_is_help=True)
influx_app = typer.Typer(help="Time-series store.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(redis_app, name="redis")
    app.add_typer(influx_app, name="influx")


@redis_app.command("rebuild")
def redis_rebuild() -> None:
    """Restore active positions, their hashes and the trading state in Redis from PostgreSQL."""
    from phoenix95.cli.console import stderr

    restored = asyncio.run(_rebuild())
    stderr.print(f"restored {restored['positions']} open position(s) and {restored['trading_state']} trading state")


async def _rebuild() -> dict[str, int]:
    from phoenix95.settings import get_settings
    from phoenix95.storage.postgres import Database
    from phoenix95.storage.rebuild import rebuild_redis
    from phoenix95.storage.redis_state import RedisState
    from phoenix95.streams.wiring import brackets_for, trading_config

    settings = get_settings()
    redis = RedisState.from_url(settings.redis_url(), prefix=settings.redis.prefix)
    try:
        await redis.ping()  # Redis down: say so now (writes wait for it)
        async with Database(settings.postgres_url(), schema=settings.postgres.db_schema) as db:
            return await rebuild_redis(db, redis, brackets_for(settings), trading_config(settings).funding_interval)
    finally:
        await redis.close()


@influx_app.command("setup")
def influx_setup() -> None:
    """Create the seed's buckets with their retention (trading 365 d, market 90 d, system 30 d, risk 180 d)."""
    from phoenix95.cli.console import UserError, stderr
    from phoenix95.settings import get_settings
    from phoenix95.stack.ready import setup_buckets

    settings = get_settings()
    if not settings.influx.url:
        raise UserError("no time-series store configured (P95_INFLUX__URL): start the stack with `p95 up`")
    stderr.print(setup_buckets(settings, say=stderr.print))
