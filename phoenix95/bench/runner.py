"""Runs the `p95 bench` scenarios on the configured stack (or the embedded one, brought up and torn
down here), each figure with its baseline measured in the same run."""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from phoenix95.bench.external import optional_baseline
from phoenix95.settings import Settings

SCENARIOS = (
    "broker_raw",
    "sink_postgres",
    "sink_redis",
    "sink_timeseries",
    "e2e_throughput",
    "signal_to_order_latency",
    "price_throughput",
    "latency_live",
    "webhook_ack_latency",
    "replay_inprocess",
    "replay_kafka",
    "tap",
    "e2e_sse_clients",
    "notify_latency",
    "e2e_notifications",
    "exchange_order_ack",
    "audit_chain_cost",
)
#: Run only when named (`--only`) or by `--profile`: not part of a full `p95 bench`.
ON_DEMAND = ("e2e_profile", "soak")


def machine(settings: Settings) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "broker": settings.kafka.bootstrap_servers,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _scenario(name: str, settings: Settings, quick: bool) -> dict[str, Any]:
    if name == "broker_raw":
        from phoenix95.bench import broker

        return broker.run(settings.kafka.bootstrap_servers, quick=quick)
    if name == "sink_postgres":
        from phoenix95.bench import sinks

        return asyncio.run(
            sinks.postgres(
                settings.postgres_url(),
                rows=10_000 if quick else 60_000,
                naive_rows=1_000 if quick else 3_000,
                batch=settings.kafka.batch_max_records,
                rounds=1 if quick else 3,
            )
        )
    if name == "sink_redis":
        from phoenix95.bench import sinks

        return asyncio.run(
            sinks.redis(settings.redis_url(), ops=20_000 if quick else 100_000, naive_ops=2_000 if quick else 10_000)
        )
    if name == "sink_timeseries":
        from phoenix95.bench import sinks

        return asyncio.run(
            sinks.timeseries(
                settings.influx.url, points=20_000 if quick else 200_000, naive_points=500 if quick else 2_000
            )
        )
    if name == "e2e_throughput":
        from phoenix95.bench import naive_faust, pipeline, quix_baseline

        signals = 2_000 if quick else 20_000
        ours = pipeline.e2e_throughput(settings, signals=signals)
        baseline: dict[str, Any] = {}
        naive = asyncio.run(
            naive_faust.measure(settings.kafka.bootstrap_servers, settings.postgres_url(), signals=min(signals, 5_000))
        )
        baseline["naive_faust"] = naive
        baseline["quix_streams"], missing = optional_baseline(
            quix_baseline.missing(),
            lambda: asyncio.run(quix_baseline.measure(settings.kafka.bootstrap_servers, signals=signals)),
        )
        if missing:
            ours["baseline_missing"] = {"quix_streams": missing}
        ours["baseline"] = baseline
        ours["ratio"] = round(ours["value"] / naive["signals_per_s"], 2) if naive.get("signals_per_s") else None
        return ours
    if name == "audit_chain_cost":
        from phoenix95.bench import audit_chain

        return audit_chain.run(settings, signals=2_000 if quick else 20_000)
    if name == "e2e_profile":
        from pathlib import Path

        from phoenix95.bench import profile

        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        out = Path(os.environ.get("P95_PROFILE_DIR") or settings.home / "profile" / stamp)
        return profile.run(settings, signals=1_000 if quick else 5_000, out_dir=out)
    if name == "soak":
        from pathlib import Path

        from phoenix95.bench import soak

        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        out = Path(os.environ.get("P95_SOAK_DIR") or settings.home / "soak" / stamp)
        duration = soak.parse_duration(os.environ.get("P95_SOAK_DURATION", "2m" if quick else "2h"))
        return soak.run(settings, duration_s=duration, speed=float(os.environ.get("P95_SOAK_SPEED", "1")), out_dir=out)
    if name == "signal_to_order_latency":
        from phoenix95.bench import pipeline

        return pipeline.latency(settings, rate=200.0, seconds=5.0 if quick else 30.0)
    if name == "price_throughput":
        from phoenix95.bench import prices

        return prices.run(settings, quick=quick)
    if name == "latency_live":
        return _latency_live(settings, quick)
    if name == "replay_inprocess":
        from phoenix95.bench import replay

        return replay.inprocess(quick=quick)
    if name == "replay_kafka":
        from phoenix95.bench import replay

        return replay.kafka(settings, quick=quick)
    if name == "exchange_order_ack":
        from phoenix95.bench import exchange

        return exchange.run(settings.postgres_url(), quick=quick)
    if name in ("tap", "webhook_ack_latency"):
        from phoenix95.bench import external

        return external.run(name, settings, quick=quick)
    if name == "e2e_sse_clients":
        from phoenix95.bench import dashboard_sse

        return dashboard_sse.run(settings, signals=2_000 if quick else 10_000, clients=100)
    if name == "notify_latency":
        from phoenix95.bench import notify

        return notify.notify_latency(settings, quick=quick)
    if name == "e2e_notifications":
        from phoenix95.bench import notify

        return notify.e2e_with_notifications(settings, quick=quick)
    raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS + ON_DEMAND)}")


def _latency_live(settings: Settings, quick: bool) -> dict[str, Any]:
    """50 signals/s with a price every 100 ms per symbol (ten symbols), wall clock; the floor: the same
    four hops relayed by bare aiokafka clients at the same rates, in the same run."""
    from phoenix95.bench import pipeline, relay
    from phoenix95.bench.prices import TEN_SYMBOLS

    rate, price_interval, seconds = 50.0, 0.1, 8.0 if quick else 30.0
    ours = pipeline.latency(settings, rate=rate, seconds=seconds, price_interval=price_interval, symbols=TEN_SYMBOLS)
    floor = asyncio.run(
        relay.measure(
            settings.kafka.bootstrap_servers,
            rate=rate,
            seconds=seconds,
            price_interval=price_interval,
            symbols=len(TEN_SYMBOLS),
            partitions=settings.kafka.partitions,
            fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms,
        )
    )
    verdict_p99 = ours["signal_to_verdict_ms"].get("p99")
    floor_p99 = floor["signal_to_verdict_ms"].get("p99")
    opened_p99 = ours["signal_to_position_opened_ms"].get("p99")
    return {
        **ours,
        "value": verdict_p99,
        "unit": "ms (p99 signal->verdict)",
        "signal_to_position_opened_p99_ms": opened_p99,
        "targets": {"signal_to_verdict_p99_ms": 30, "signal_to_position_opened_p99_ms": 100},
        "meets_targets": {
            "signal_to_verdict": verdict_p99 is not None and verdict_p99 <= 30,
            "signal_to_position_opened": opened_p99 is not None and opened_p99 <= 100,
        },
        "baseline": {"bare_aiokafka_relay": floor},
        # how many times the floor: for a latency, the pipeline's p99 over the relay's p99
        "ratio": round(verdict_p99 / floor_p99, 2) if verdict_p99 and floor_p99 else None,
    }


def run(
    *,
    quick: bool,
    only: list[str] | None,
    on_start: Callable[[str], None] | None = None,
    on_done: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    from phoenix95.settings import get_settings
    from phoenix95.stack.manager import Stack

    known = SCENARIOS + ON_DEMAND
    unknown = [name for name in only or [] if name not in known]
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(known)}")
    base = get_settings()
    stack = Stack(base.home, timeseries_retention_days=base.influx.retention_days)
    before = stack.status() if stack.path.exists() else {}
    endpoints = stack.up()
    started_here = [n for n, e in endpoints.items() if e.managed and not before.get(n, {}).get("healthy")]
    env = {
        "kafka": "P95_KAFKA__BOOTSTRAP_SERVERS",
        "postgres": "P95_POSTGRES__URL",
        "redis": "P95_REDIS__URL",
        "timeseries": "P95_INFLUX__URL",
    }
    for name, endpoint in endpoints.items():
        if endpoint.url:
            os.environ[env[name]] = endpoint.url
    get_settings.cache_clear()
    settings = get_settings()
    results: dict[str, Any] = {"machine": machine(settings), "quick": quick, "scenarios": {}}
    try:
        for name in only or list(SCENARIOS):
            if on_start:
                on_start(name)
            began = time.perf_counter()
            try:
                figure = _scenario(name, settings, quick)
            except Exception as error:
                figure = {
                    "value": None,
                    "error": f"{type(error).__name__}: {error}",
                    "trace": traceback.format_exc(limit=3),
                }
            figure["took_s"] = round(time.perf_counter() - began, 1)
            results["scenarios"][name] = figure
            if on_done:
                on_done(name, figure)
    finally:
        results["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        if started_here:
            stack.down()
    return results
