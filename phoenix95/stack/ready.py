"""Making a running stack ready to use (`p95 up` ends with it): the PostgreSQL schema migrated, every
topic created (p95.control.events included) and the time-series buckets set up, so that any command
works right after `p95 up`, in any order."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

logger = logging.getLogger(__name__)


def make_ready(settings: Any) -> list[str]:
    """Migrate, create the topics, set up the buckets; returns one line per step done."""
    from phoenix95.connectors.kafka_admin import ensure_topics
    from phoenix95.schemas.topics import Topics
    from phoenix95.storage.postgres import migrate

    topics = Topics(settings.namespace)

    async def run() -> tuple[list[str], list[str]]:
        applied = await migrate(settings.postgres_url(), settings.postgres.db_schema)
        created = await ensure_topics(
            settings.kafka.bootstrap_servers,
            topics.all(),
            partitions=settings.kafka.partitions,
            replication_factor=settings.kafka.replication_factor,
            counts=topics.partition_counts(settings.kafka.partitions, settings.risk.clock),
        )
        return applied, created

    applied, created = asyncio.run(run())
    lines = [
        f"schema {settings.postgres.db_schema}: "
        + (f"applied migrations {', '.join(applied)}" if applied else "migrations up to date"),
        f"topics: {len(topics.all())} present" + (f" ({len(created)} created)" if created else ""),
    ]
    try:
        lines.append(f"time series: {setup_buckets(settings)}")
    except Exception as error:  # optional: the sink retries; the stack is usable without it
        lines.append(f"time series: not set up ({str(error).strip()[:120]}); check P95_INFLUX__URL")
    return lines


#: The seed's buckets and their retention in days.
BUCKETS = {"s4_trading_data": 365, "s4_market_data": 90, "s4_system_metrics": 30, "s4_risk_metrics": 180}


def is_victoria_metrics(url: str) -> bool:
    """VictoriaMetrics answers /ping like InfluxDB but has no bucket API and no X-Influxdb-Version."""
    import urllib.request

    try:
        with urllib.request.urlopen(url.rstrip("/") + "/ping", timeout=5) as response:
            return response.headers.get("X-Influxdb-Version") is None
    except Exception:
        return False


def setup_buckets(settings: Any, say: Any = None) -> str:
    """Create the seed's buckets with their retention on InfluxDB; nothing to do on VictoriaMetrics."""
    url = settings.influx.url
    if not url or not settings.influx.enabled:
        return "off (no time-series store configured: P95_INFLUX__URL)"
    if is_victoria_metrics(url):
        return (
            f"{url} is VictoriaMetrics: it has no buckets (retention is its -retentionPeriod flag); nothing to set up"
        )
    from influxdb_client import BucketRetentionRules, InfluxDBClient

    client = InfluxDBClient(url=url, token=settings.influx.token.get_secret_value(), org=settings.influx.org)
    created = []
    try:
        api = client.buckets_api()
        existing = {bucket.name for bucket in api.find_buckets(limit=100).buckets or []}
        for name, days in BUCKETS.items():
            if name in existing:
                if say is not None:
                    say(f"bucket {name} exists")
                continue
            api.create_bucket(
                bucket_name=name,
                org=settings.influx.org,
                retention_rules=BucketRetentionRules(type="expire", every_seconds=days * 86400),
                description=f"Phoenix95 {name} ({days} d)",
            )
            created.append(f"{name} ({days} d)")
            if say is not None:
                say(f"created bucket {name} (retention {days} d)")
    finally:
        client.close()
    return f"buckets {', '.join(created)} created" if created else "buckets present"


def preflight(settings: Any, needs: tuple[str, ...] = ("broker", "postgres", "redis")) -> None:
    """Fail fast, with the store's own error (cli/errors.py turns it into one line), when a store a
    long-running command needs does not answer, instead of waiting for it forever."""
    check_reachable(
        settings.kafka.bootstrap_servers if "broker" in needs else None,
        settings.postgres_url() if "postgres" in needs else None,
        settings.redis_url() if "redis" in needs else None,
    )


def check_reachable(bootstrap: str | None, postgres_url: str | None, redis_url: str | None) -> None:
    """Raise the first store's error among those given (None: not checked)."""
    import psycopg

    from phoenix95.monitoring.health import broker_check, redis_check

    async def run() -> None:
        if bootstrap:
            await broker_check(bootstrap)()
        if postgres_url:
            conn = await psycopg.AsyncConnection.connect(postgres_url, connect_timeout=3)
            await conn.close()
        if redis_url:
            await redis_check(redis_url)()

    asyncio.run(run())
