"""`p95 redis rebuild` and `p95 influx setup`: the hot state and the time-series store."""

from __future__ import annotations

import asyncio
import urllib.request

import typer

redis_app = typer.Typer(help="Redis hot state.", no_args_is_help=True)
influx_app = typer.Typer(help="Time-series store.", no_args_is_help=True)

#: The seed's buckets and their retention in days.
BUCKETS = {"s4_trading_data": 365, "s4_market_data": 90, "s4_system_metrics": 30, "s4_risk_metrics": 180}


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
        async with Database(settings.postgres_url(), schema=settings.postgres.db_schema) as db:
            return await rebuild_redis(db, redis, brackets_for(settings), trading_config(settings).funding_interval)
    finally:
        await redis.close()


def is_victoria_metrics(url: str) -> bool:
    """VictoriaMetrics answers /ping like InfluxDB but has no bucket API and no X-Influxdb-Version."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/ping", timeout=5) as response:
            return response.headers.get("X-Influxdb-Version") is None
    except Exception:
        return False


@influx_app.command("setup")
def influx_setup() -> None:
    """Create the seed's buckets with their retention (trading 365 d, market 90 d, system 30 d, risk 180 d)."""
    from phoenix95.cli.console import UserError, stderr
    from phoenix95.settings import get_settings

    settings = get_settings()
    url = settings.influx.url
    if not url:
        raise UserError("no time-series store configured (P95_INFLUX__URL)")
    if is_victoria_metrics(url):
        stderr.print(
            f"{url} is VictoriaMetrics: it has no buckets (retention is its -retentionPeriod flag); nothing to set up"
        )
        return
    from influxdb_client import BucketRetentionRules, InfluxDBClient

    client = InfluxDBClient(url=url, token=settings.influx.token.get_secret_value(), org=settings.influx.org)
    try:
        api = client.buckets_api()
        existing = {bucket.name for bucket in api.find_buckets(limit=100).buckets or []}
        for name, days in BUCKETS.items():
            if name in existing:
                stderr.print(f"bucket {name} exists")
                continue
            api.create_bucket(
                bucket_name=name,
                org=settings.influx.org,
                retention_rules=BucketRetentionRules(type="expire", every_seconds=days * 86400),
                description=f"Phoenix95 {name} ({days} d)",
            )
            stderr.print(f"created bucket {name} (retention {days} d)")
    finally:
        client.close()
