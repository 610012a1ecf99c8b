"""`p95 doctor`: is this machine ready? One line per check with ✓ or ✗ and, for a failure, the fix.
Exit status 1 when a required check fails (optional ones only warn)."""

from __future__ import annotations

import asyncio
import shutil
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import typer

#: Python the project supports (pyproject's requires-python).
MIN_PYTHON = (3, 11)
#: Most clock skew against PostgreSQL's clock still accepted (Binance refuses requests at 1 s: -1021).
MAX_SKEW_S = 1.0
#: A service that refuses answers at once; this is for one that is slow (or a loaded machine).
CHECK_TIMEOUT_S = 10.0
#: The embedded broker (Tansu, memory engine) scans a partition's records on every fetch that returns
#: some. In the 2-hour soak (ten symbols at 1 price/s, ~25 open positions; docs/long-runs.md) its CPU
#: passed half a core when the fullest partition held ~14,000 records, and a whole core at ~22,000.
#: The doctor warns from 70 % of the first.
EMBEDDED_BROKER_LIMIT = 14_000
EMBEDDED_BROKER_WARN_AT = 0.7


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)


def doctor(as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON.")) -> None:
    """Check Python, each service (reachable, version), the migrations, the topics and their partitions,
    the time-series store, the optional tools (kcat, chromium) and the clock."""
    from phoenix95.cli.console import print_json, stderr
    from phoenix95.settings import get_settings

    checks = run_checks(get_settings())
    if as_json:
        print_json([asdict(check) for check in checks])
    else:
        for check in checks:
            mark = "[green]✓[/green]" if check.ok else ("[red]✗[/red]" if check.required else "[yellow]✗[/yellow]")
            optional = "" if check.required else " (optional)"
            line = f"{mark} {check.name:<18} {check.detail}{optional}"
            if not check.ok and check.fix:
                line += f"\n  [dim]fix:[/dim] {check.fix}"
            stderr.print(line, highlight=False)
        failed = [c.name for c in checks if c.required and not c.ok]
        stderr.print(f"{'not ready: ' + ', '.join(failed) if failed else 'ready'}", highlight=False)
    if any(check.required and not check.ok for check in checks):
        raise typer.Exit(1)


def run_checks(settings: Any) -> list[Check]:
    checks = [python_check()]
    checks += asyncio.run(_service_checks(settings))
    checks += [tool_check("kcat", "the baseline `p95 bench` measures `p95 tap` against", "make tsdb (Debian: kcat)")]
    checks += [
        tool_check(
            "chromium",
            "the replay report screenshot test",
            "make browser (Debian: chromium)",
            names=("chromium-browser",),
        )
    ]
    return checks


def python_check() -> Check:
    version = ".".join(str(part) for part in sys.version_info[:3])
    ok = sys.version_info[:2] >= MIN_PYTHON
    return Check("python", ok, version, f"install Python {'.'.join(map(str, MIN_PYTHON))} or newer")


def tool_check(name: str, used_for: str, fix: str, *, names: tuple[str, ...] = ()) -> Check:
    path = next((found for n in (name, *names) if (found := shutil.which(n))), None)
    return Check(name, path is not None, path or f"not found (for {used_for})", fix, required=False)


async def _timed(check: Any, name: str, fix: str, required: bool = True) -> Check:
    try:
        return await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
    except Exception:
        # once more: on a loaded machine a healthy broker was seen to fail a first connection
        await asyncio.sleep(1.0)
    try:
        return await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
    except Exception as error:
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:160] or type(error).__name__
        if isinstance(error, TimeoutError):
            detail = f"no answer within {CHECK_TIMEOUT_S:g}s"
        return Check(name, False, detail, fix, required)


async def _service_checks(settings: Any) -> list[Check]:
    up = "start the stack: p95 up"
    postgres_url = settings.postgres.url.get_secret_value() if settings.postgres.url else None
    redis_url = settings.redis.url.get_secret_value() if settings.redis.url else None
    broker = _timed(lambda: _broker(settings), "broker", f"{up} (or check P95_KAFKA__BOOTSTRAP_SERVERS)")
    topics = _timed(lambda: _topics(settings), "topics", "p95 up (creates every topic)")
    results = await asyncio.gather(
        broker,
        topics,
        _timed(lambda: _postgres(postgres_url), "postgresql", f"{up} (or set P95_POSTGRES__URL)"),
        _timed(lambda: _migrations(postgres_url, settings.postgres.db_schema), "migrations", "p95 db migrate"),
        _timed(lambda: _redis(redis_url), "redis", f"{up} (or set P95_REDIS__URL)"),
        _timed(lambda: _timeseries(settings), "time series", f"{up} (or set P95_INFLUX__URL)", required=False),
        _timed(lambda: _clock(postgres_url), "clock", "synchronize the clock (NTP: chrony or systemd-timesyncd)"),
    )
    checks = list(results)
    if results[0].ok and _embedded_broker(settings):
        checks.append(
            await _timed(lambda: _broker_growth(settings), "broker growth", BROKER_GROWTH_FIX, required=False)
        )
    return checks


BROKER_GROWTH_FIX = (
    "p95 down && p95 up empties the embedded broker (it keeps nothing across restarts); for runs of a day "
    "or more use the compose stack with Apache Kafka (docs/long-runs.md)"
)


def _embedded_broker(settings: Any) -> bool:
    """Is the broker the embedded stack's Tansu (`p95 up`)? Its limit does not apply to Apache Kafka."""
    from phoenix95.stack.manager import Stack

    endpoint = Stack(settings.home).load().get("kafka")
    return bool(endpoint and endpoint.kind == "tansu" and endpoint.url == settings.kafka.bootstrap_servers)


def broker_growth_check(records: dict[str, int], limit: int = EMBEDDED_BROKER_LIMIT) -> Check:
    """The fullest partition (`topic[partition]` -> records) against the embedded broker's limit."""
    if not records:
        return Check("broker growth", True, f"no records yet (embedded broker; limit ~{limit:,} per partition)")
    fullest, count = max(records.items(), key=lambda item: item[1])
    share = count / limit
    detail = f"fullest partition {fullest}: {count:,} records, {share:.0%} of the embedded broker's ~{limit:,}"
    if share >= EMBEDDED_BROKER_WARN_AT:
        detail += " (past it, each fetch of new prices costs the broker more CPU)"
        return Check("broker growth", False, detail, BROKER_GROWTH_FIX, required=False)
    return Check("broker growth", True, detail, required=False)


async def _broker_growth(settings: Any) -> Check:
    from phoenix95.connectors.kafka_admin import end_offsets
    from phoenix95.schemas.topics import Topics

    topics = list(Topics(settings.namespace).partition_counts(settings.kafka.partitions, settings.risk.clock))
    ends = await end_offsets(settings.kafka.bootstrap_servers, topics)
    return broker_growth_check({f"{tp.topic}[{tp.partition}]": end for tp, end in ends.items()}, EMBEDDED_BROKER_LIMIT)


async def _broker(settings: Any) -> Check:
    from aiokafka import AIOKafkaClient

    client = AIOKafkaClient(bootstrap_servers=settings.kafka.bootstrap_servers, request_timeout_ms=8000)
    try:
        await client.bootstrap()
        brokers = len(client.cluster.brokers())
        try:
            version = ".".join(map(str, await asyncio.wait_for(client.check_version(), 2)))
            version = f"Kafka API {version}"
        except Exception:
            version = "version not reported"
    finally:
        await client.close()
    return Check("broker", True, f"{settings.kafka.bootstrap_servers} ({brokers} broker(s), {version})")


async def _topics(settings: Any) -> Check:
    from aiokafka.admin import AIOKafkaAdminClient

    from phoenix95.schemas.topics import Topics

    topics = Topics(settings.namespace)
    wanted = topics.partition_counts(settings.kafka.partitions, settings.risk.clock)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers, request_timeout_ms=8000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        described = await admin.describe_topics([name for name in wanted if name in existing]) if existing else []
    finally:
        await admin.close()
    partitions = {item["topic"]: len(item.get("partitions") or []) for item in described}
    fewer = [
        f"{name} has {partitions[name]}/{count}"
        for name, count in wanted.items()
        if partitions.get(name, count) < count
    ]
    if missing:
        return Check("topics", False, f"missing: {', '.join(missing)}", "p95 up (creates every topic)")
    if fewer:
        return Check(
            "topics", False, f"fewer partitions than P95_KAFKA__PARTITIONS: {'; '.join(fewer)}", "recreate the topics"
        )
    counts = sorted(set(partitions.values()))
    if len(counts) == 1:
        summary = f"{counts[0]} partitions each"
    else:
        summary = "partitions " + ", ".join(f"{topics.base(name)}:{partitions.get(name, '?')}" for name in wanted)
    return Check("topics", True, f"{len(wanted)} present, {summary}")


async def _postgres(url: str | None) -> Check:
    if url is None:
        return Check("postgresql", False, "not configured (the stack is not running)", "start the stack: p95 up")
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, connect_timeout=8) as conn:
        cursor = await conn.execute("SHOW server_version")
        row = await cursor.fetchone()
    return Check("postgresql", True, f"PostgreSQL {row[0] if row else '?'}")


async def _migrations(url: str | None, schema: str) -> Check:
    if url is None:
        return Check("migrations", False, "no PostgreSQL", "start the stack: p95 up")
    from phoenix95.monitoring.health import expected_migrations, postgres_check

    detail = await postgres_check(url, schema)()
    return Check("migrations", True, f"{detail} of {len(expected_migrations())} applied (schema {schema})")


async def _redis(url: str | None) -> Check:
    if url is None:
        return Check("redis", False, "not configured (the stack is not running)", "start the stack: p95 up")
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, socket_timeout=8, socket_connect_timeout=8)
    try:
        info = await client.info("server")
    finally:
        await client.aclose()
    return Check("redis", True, f"Redis {info.get('redis_version', '?')}")


async def _timeseries(settings: Any) -> Check:
    url = settings.influx.url
    if not url or not settings.influx.enabled:
        return Check("time series", False, "not configured: the time-series sink is off", "p95 up", required=False)

    def probe() -> str:
        import urllib.request

        with urllib.request.urlopen(url.rstrip("/") + "/ping", timeout=8) as response:
            influx = response.headers.get("X-Influxdb-Version")
        if influx:
            return f"InfluxDB {influx}"
        with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=8) as response:
            for line in response.read().decode(errors="replace").splitlines():
                if line.startswith("vm_app_version{"):
                    version = line.split('{version="', 1)[-1].split('"', 1)[0]
                    return f"VictoriaMetrics {version}" if version else "VictoriaMetrics, version not reported"
        return "reachable"

    return Check("time series", True, f"{url} ({await asyncio.to_thread(probe)})", required=False)


async def _clock(url: str | None) -> Check:
    """The local UTC clock against PostgreSQL's (another host's clock when the database is remote)."""
    now = datetime.now(UTC)
    if url is None:
        return Check("clock", True, f"{now:%Y-%m-%d %H:%M:%S} UTC (no PostgreSQL to compare with)")
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, connect_timeout=8) as conn:
        before = datetime.now(UTC)
        cursor = await conn.execute("SELECT clock_timestamp()")
        row = await cursor.fetchone()
        after = datetime.now(UTC)
    server = row[0] if row else before
    skew = abs((server - (before + (after - before) / 2)).total_seconds())
    ok = skew <= MAX_SKEW_S
    return Check("clock", ok, f"{now:%Y-%m-%d %H:%M:%S} UTC, {skew * 1000:.0f} ms from PostgreSQL's clock")
