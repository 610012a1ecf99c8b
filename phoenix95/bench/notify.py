"""`notify_latency`: position events at 50/s through the notifications worker to an HTTP receiver
(Apprise `json://`), from the broker's acknowledgement of the event to the receiver's arrival of the
message (or digest line) naming its position. Baseline: the raw Apprise send to the same receiver.
Target: p99 <= 1 s."""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import threading
import time
from datetime import timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from phoenix95.bench.pg_backends import BackendClock, listener_pid, process_cpu
from phoenix95.domain import ids
from phoenix95.schemas.envelope import utc_now
from phoenix95.schemas.messages import PositionEvent
from phoenix95.settings import Settings

TARGET_P99_S = 1.0
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Receiver:
    """An HTTP server on a free port recording when each position id first arrived."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.messages = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                now = time.time()
                receiver.messages += 1
                for position_id in _UUID.findall(f"{data.get('title', '')}\n{data.get('message', '')}"):
                    receiver.arrivals.setdefault(position_id, now)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.server.server_address[1]}/bench"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def opened_event(run: str, index: int) -> PositionEvent:
    position_id = ids.derive("bench-position", run, index)
    now = utc_now()
    return PositionEvent.trusted(
        event_id=ids.derive("bench-opened", position_id),
        correlation_id=position_id,
        causation_id=None,
        ts_event=now,
        ts_ingest=now,
        schema_version=PositionEvent.SCHEMA_VERSION,
        producer="bench",
        position_id=position_id,
        order_id=ids.derive("bench-order", position_id),
        signal_id=f"bench-{index}",
        symbol="BTCUSDT",
        side="long",
        kind="opened",
        status="open",
        quantity=Decimal("0.01"),
        leverage=5,
        margin_mode="ISOLATED",
        entry_price=Decimal("60000"),
        price=Decimal("60000"),
        mark_price=Decimal("60000"),
        margin=Decimal("120"),
        stop_loss_price=Decimal("58800"),
        take_profit_price=Decimal("61200"),
        liquidation_price=Decimal("48300"),
        unrealized_pnl=Decimal(0),
        unrealized_pnl_percent=Decimal(0),
        roe=Decimal(0),
        maintenance_margin=Decimal("2.4"),
        margin_ratio=Decimal(0),
        distance_to_liquidation=Decimal(20),
        risk_level="LOW",
        entry_fee=Decimal("0.24"),
        opened_at=now,
        auto_close_at=now + timedelta(hours=48),
    )


def _figures(seconds: list[float]) -> dict[str, float | None]:
    if not seconds:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(p99 * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


def raw_apprise(url: str, sends: int) -> dict[str, Any]:
    """The baseline: Apprise's own synchronous send, one after the other."""
    import apprise

    plugin = apprise.Apprise.instantiate(url)
    assert plugin is not None
    took = []
    for index in range(sends):
        started = time.perf_counter()
        plugin.notify(title=f"bench {index}", body="raw apprise send")
        took.append(time.perf_counter() - started)
    return {**_figures(took), "sends": sends}


def notify_latency(base: Settings, *, quick: bool, rate: float = 50.0) -> dict[str, Any]:
    from phoenix95.replay.kafka_mode import new_run_id, run_environment
    from phoenix95.streams.supervisor import WorkerSet

    receiver = Receiver()
    run_id = new_run_id()
    env = {
        **run_environment(base, run_id, {}),
        "P95_NOTIFY__URLS": json.dumps([{"url": receiver.url, "name": "bench"}]),
        "P95_NOTIFY__TYPES": json.dumps({"worker": "off", "health": "off"}),
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    settings = Settings()
    workers = WorkerSet(["notifications"], env=env, log_dir=settings.home / "logs" / run_id, log_level="warn")
    try:
        from phoenix95.streams.wiring import prepare

        prepare(settings)
        workers.start()
        seconds = 10.0 if quick else 30.0
        ours = asyncio.run(_measure(settings, receiver, run_id, rate=rate, seconds=seconds, workers=workers))
        baseline = raw_apprise(receiver.url, 100 if quick else 300)
    finally:
        workers.stop()
        receiver.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    p99 = ours.get("p99_ms")
    return {
        "value": p99,
        "unit": "ms p99 (event acknowledged -> notification received)",
        **ours,
        "target_p99_ms": TARGET_P99_S * 1000,
        "meets_target": p99 is not None and p99 <= TARGET_P99_S * 1000,
        "baseline": {"raw_apprise_send": baseline},
        "run_id": run_id,
    }


async def _measure(
    settings: Settings, receiver: Receiver, run_id: str, *, rate: float, seconds: float, workers: Any
) -> dict[str, Any]:
    from phoenix95.schemas.codec import Codec
    from phoenix95.schemas.topics import Topics
    from phoenix95.streams.producer import EventProducer

    producer = EventProducer(settings.kafka.bootstrap_servers, Topics(settings.namespace), Codec.for_settings(settings))
    await producer.start()
    try:
        warm = opened_event(run_id, -1)
        await producer.publish([warm])
        deadline = time.monotonic() + 120
        while warm.position_id not in receiver.arrivals:  # the worker joined its group and sends
            if time.monotonic() > deadline:
                raise TimeoutError("the notifications worker sent nothing within 120 s")
            workers.restart_dead()
            await asyncio.sleep(0.1)
        count = int(rate * seconds)
        published: dict[str, float] = {}
        started = time.monotonic()
        for index in range(count):
            await asyncio.sleep(max(0.0, started + index / rate - time.monotonic()))
            event = opened_event(run_id, index)
            await producer.publish([event])
            published[event.position_id] = time.time()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(p in receiver.arrivals for p in published):
            await asyncio.sleep(0.1)
    finally:
        await producer.stop()
    latencies = [receiver.arrivals[p] - at for p, at in published.items() if p in receiver.arrivals]
    return {
        **_figures(latencies),
        "events": len(published),
        "received": len(latencies),
        "rate_per_s": rate,
        "messages": receiver.messages - 1,
    }


def e2e_with_notifications(base: Settings, *, quick: bool) -> dict[str, Any]:
    """`e2e_throughput` twice in one run: the pipeline alone, then with the notifications worker
    (default types) delivering to an HTTP receiver. Target: on >= 0.95 x off.

    Wall-clock throughput is noisy on a shared machine, so the run also reports CPU seconds, which
    are not: the notifications worker's CPU µs per message it consumed (its inputs' growth over the
    measured window, warm-up excluded), per notification (outbox rows made in the same window), and
    its share of the CPU of all five workers."""
    from phoenix95.bench import pipeline as bench_pipeline
    from phoenix95.streams.stages import STAGES
    from phoenix95.streams.supervisor import WorkerSet

    signals = int(os.environ.get("P95_BENCH_E2E_NOTIFY_SIGNALS", 2_000 if quick else 20_000))
    off = bench_pipeline.e2e_throughput(base, signals=signals)
    receiver = Receiver()
    try:
        env = {
            "P95_RISK__CLOCK": "event",
            "P95_NOTIFY__URLS": json.dumps([{"url": receiver.url, "name": "bench"}]),
        }
        running = bench_pipeline.BenchPipeline(base, env)
        running.workers = WorkerSet(  # the four stages, and the hub next to them
            (*STAGES, "notifications"),
            env=running.env,
            log_dir=running.settings.home / "logs" / running.run_id,
            log_level="warn",
        )
        with running:
            on, cpu = asyncio.run(_e2e_with_cpu(running, signals))
            on["messages_received"] = receiver.messages
    finally:
        receiver.close()
    ratio = round(on["value"] / off["value"], 3) if off.get("value") else None
    return {
        "value": ratio,
        "unit": "x (signals/s with notifications on / off)",
        "off_signals_per_s": off.get("value"),
        "on_signals_per_s": on.get("value"),
        "messages_received": on.get("messages_received"),
        **cpu,
        "target": 0.95,
        "meets_target": ratio is not None and ratio >= 0.95,
        "signals": signals,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


async def _e2e_with_cpu(running: Any, signals: int) -> tuple[dict[str, Any], dict[str, Any]]:
    import psutil

    from phoenix95.bench import pipeline as bench_pipeline
    from phoenix95.connectors.kafka_admin import message_counts
    from phoenix95.streams import stages as registry

    bootstrap = running.settings.kafka.bootstrap_servers
    inputs = [running.topics.name(t) for t in registry.spec("notifications").inputs]
    group = running.topics.group("notifications")
    await running.warm_up()
    await _caught_up(bootstrap, group, inputs, timeout=120.0)
    processes = {stage: psutil.Process(running.workers.pid(stage)) for stage in running.workers.stages}
    spy = _profile(processes["notifications"].pid)
    backends = BackendClock({stage: p.pid for stage, p in processes.items()}, _pg_port(running.settings))
    backends.start()
    broker_pid = listener_pid(_port(bootstrap.split(",")[0], 9092))
    broker_before = process_cpu(broker_pid)
    tables_before = await _outbox_table_stats(running.settings)
    cpu_before = {stage: sum(p.cpu_times()[:2]) for stage, p in processes.items()}
    counted = sorted({*inputs, running.topics.position_ticks})
    before = await message_counts(bootstrap, counted)
    rows_before = await _notifications_by_type(running.settings)
    on = await bench_pipeline._e2e_throughput(running, signals, 900.0)
    await _caught_up(bootstrap, group, inputs, timeout=300.0)
    cpu = {stage: sum(p.cpu_times()[:2]) - cpu_before[stage] for stage, p in processes.items()}
    pg_cpu = backends.stop()
    broker_after = process_cpu(broker_pid)
    tables_after = await _outbox_table_stats(running.settings)
    if spy is not None:
        _stop_profile(spy)
    after = await message_counts(bootstrap, counted)
    consumed = sum(after[t] - before.get(t, 0) for t in inputs)
    notify_cpu = cpu["notifications"]
    rows_after = await _notifications_by_type(running.settings)
    by_type = {kind: count - rows_before.get(kind, 0) for kind, count in rows_after.items()}
    notified = sum(by_type.values())
    return on, {
        "notifications_consumed": consumed,
        "notifications_consumed_by_topic": {running.topics.base(t): after[t] - before.get(t, 0) for t in inputs},
        # what the hub read before p95.positions.lifecycle: every tick
        "position_ticks_produced": after[running.topics.position_ticks] - before.get(running.topics.position_ticks, 0),
        "notifications": notified,
        "notifications_by_type": by_type,
        "notifications_cpu_s": round(notify_cpu, 2),
        "notifications_cpu_us_per_consumed": round(notify_cpu / consumed * 1e6, 1) if consumed else None,
        "notifications_cpu_ms_per_notification": round(notify_cpu / notified * 1e3, 2) if notified else None,
        "notifications_cpu_share": round(notify_cpu / sum(cpu.values()), 3) if sum(cpu.values()) else None,
        "cpu_s_by_worker": {stage: round(seconds, 2) for stage, seconds in cpu.items()},
        # the PostgreSQL backends serving each worker (PostgreSQL shares the cores with the workers)
        "pg_backend_cpu_s_by_worker": pg_cpu,
        # the broker's CPU over the same window (all its clients: the hub's fetches are a part)
        "broker_cpu_s": (
            round(broker_after - broker_before, 2) if broker_before is not None and broker_after is not None else None
        ),
        "notifications_pg_cpu_ms_per_notification": (
            round(pg_cpu.get("notifications", 0.0) / notified * 1e3, 3) if notified else None
        ),
        # row operations on the hub's tables in the window (pg_stat_user_tables, the run's schema)
        "outbox_table_ops": {
            table: {key: value - tables_before.get(table, {}).get(key, 0) for key, value in stats.items()}
            for table, stats in tables_after.items()
        },
    }


def _pg_port(settings: Settings) -> int:
    from urllib.parse import urlsplit

    return urlsplit(settings.postgres_url()).port or 5432


def _port(address: str, default: int) -> int:
    host, _, port = address.rpartition(":")
    return int(port) if host and port.isdigit() else default


async def _outbox_table_stats(settings: Settings) -> dict[str, dict[str, int]]:
    """Cumulative row operations and scans on the hub's tables (statistics lag by up to a second)."""
    from phoenix95.storage.postgres import Database

    async with Database(settings.postgres_url(), schema=settings.postgres.db_schema) as db:
        await db.execute("SELECT pg_stat_clear_snapshot()")
        rows = await db.fetch(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, seq_scan, idx_scan "
            "FROM pg_stat_user_tables WHERE schemaname = %s AND relname IN ('notifications', 'notification_state')",
            (settings.postgres.db_schema,),
        )
    keys = ("inserted", "updated", "hot_updated", "deleted", "seq_scans", "index_scans")
    return {name: dict(zip(keys, (int(v or 0) for v in values), strict=True)) for name, *values in rows}


def _profile(pid: int) -> Any:
    """py-spy on the hub when P95_BENCH_PROFILE_DIR is set (its folded stacks: notifications.folded)."""
    out = os.environ.get("P95_BENCH_PROFILE_DIR")
    if not out:
        return None
    from pathlib import Path

    from phoenix95.bench import profile

    spy = profile.py_spy()
    if spy is None:
        raise RuntimeError("py-spy is not installed (pip install 'phoenix95[bench]')")
    Path(out).mkdir(parents=True, exist_ok=True)
    return profile.record(spy, pid, Path(out) / "notifications.folded")


def _stop_profile(spy: Any) -> None:
    import signal
    import subprocess

    spy.send_signal(signal.SIGINT)
    try:
        spy.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.communicate()


async def _notifications_by_type(settings: Settings) -> dict[str, int]:
    """The outbox rows the run made (one per event and channel; the bench has one channel), by type."""
    from phoenix95.storage.postgres import Database

    async with Database(settings.postgres_url(), schema=settings.postgres.db_schema) as db:
        rows = await db.fetch("SELECT event_type, COUNT(*) FROM notifications GROUP BY event_type ORDER BY event_type")
    return {event_type: count for event_type, count in rows}


async def _caught_up(bootstrap: str, group: str, topic_names: list[str], *, timeout: float) -> None:
    """Wait until the group has committed every message of its inputs (a timeout only stops waiting)."""
    from phoenix95.connectors.kafka_admin import committed_offsets, end_offsets

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ends = await end_offsets(bootstrap, topic_names)
        committed = await committed_offsets(bootstrap, group, topic_names)
        if all(committed.get(tp, 0) >= end for tp, end in ends.items()):
            return
        await asyncio.sleep(0.5)
