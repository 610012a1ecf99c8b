"""The Faust app factory: one app (= one consumer group) per stage, so stages run as separate
processes, scale and lag independently, and a crash of one does not rebalance the others."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import faust

from phoenix95.schemas.topics import Topics
from phoenix95.settings import Settings
from phoenix95.streams import stages
from phoenix95.streams.chores import (
    BROKER_CHECK_INTERVAL_S,
    STATS_LOG_INTERVAL_S,
    WorkerChores,
    freeze_startup_heap,
    run_until_done,
)
from phoenix95.streams.ownership import SymbolOwnership
from phoenix95.streams.transport import TunedApp, fresh_highwater
from phoenix95.streams.wiring import StageRuntime

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings, stage: str, *, web_port: int | None = None, metrics: Any = None, lag: Any = None
) -> faust.App:
    spec = stages.spec(stage)
    topics = Topics(settings.namespace)
    kafka = settings.kafka
    datadir = Path(settings.home) / "faust" / topics.group(stage)
    datadir.mkdir(parents=True, exist_ok=True)
    app = TunedApp(
        topics.group(stage),
        broker=f"kafka://{kafka.bootstrap_servers}",
        value_serializer="raw",
        key_serializer="raw",
        topic_partitions=kafka.partitions,
        topic_replication_factor=kafka.replication_factor,
        topic_allow_declare=True,
        broker_session_timeout=kafka.session_timeout_s,
        broker_heartbeat_interval=kafka.heartbeat_interval_s,
        broker_rebalance_timeout=kafka.rebalance_timeout_s,
        broker_request_timeout=kafka.request_timeout_s,
        broker_commit_interval=kafka.commit_interval_s,
        consumer_auto_offset_reset="earliest",
        web_enabled=web_port is not None,
        web_port=web_port or 6066,
        web_bind=settings.metrics.host,
        web_host=settings.metrics.host,
        datadir=str(datadir),
        stream_buffer_maxsize=max(4096, kafka.batch_max_records * 4),
        producer_linger=kafka.linger_ms / 1000,
    )
    app.p95_fetch_max_wait_ms = spec.fetch_wait_ms(settings)
    batch_within_s = spec.batch_within_s(settings)
    reader = getattr(getattr(lag, "monitor", None), "reader", None)
    if reader is not None and hasattr(reader, "local_highwater"):
        # the lag probe takes the ends of this stage's inputs from its own consumer (no request)
        reader.local_highwater = lambda tp: fresh_highwater(app, tp)
    runtime = StageRuntime(settings, stage, metrics=metrics, lag=lag)
    # several instances of a stage share its group: which symbols this one owns (docs/scaling.md)
    ownership = runtime.ownership = SymbolOwnership(topics.name(spec.inputs[0]), kafka.partitions)
    source = app.topic(
        *[topics.name(name) for name in spec.inputs],
        value_type=bytes,
        key_type=bytes,
        value_serializer="raw",
        key_serializer="raw",
        partitions=kafka.partitions,
    )
    state: dict[str, Any] = {}

    @app.agent(source, name=f"p95-{stage}", concurrency=1)
    async def stage_agent(stream: Any) -> None:
        runner = await runtime.start()
        freeze_startup_heap()
        state["stream"] = stream
        state["runner"] = runner
        logger.info("stage %s: consuming %s", stage, ", ".join(source.topics))
        try:
            async for events in stream.noack_take(kafka.batch_max_records, within=batch_within_s):
                await run_until_done(runner, events, stream.ack)
        finally:
            await runtime.stop()

    interval = spec.timer(settings)
    if interval:

        @app.timer(interval, name=f"p95-{stage}-clock")
        async def stage_clock() -> None:
            runner, stream = state.get("runner"), state.get("stream")
            if runner is not None and stream is not None:
                await runner.tick(stream.ack)

    chores = WorkerChores(
        settings, stage, runtime, lambda: state.get("runner"), lambda tp, age: fresh_highwater(app, tp, max_age_s=age)
    )

    @app.timer(STATS_LOG_INTERVAL_S, name=f"p95-{stage}-stats")
    async def stats_log() -> None:
        chores.stats_log()

    @app.timer(settings.metrics.system_interval_s, name=f"p95-{stage}-system-metrics")
    async def system_metrics() -> None:
        await chores.system_metrics()

    @app.timer(BROKER_CHECK_INTERVAL_S, name=f"p95-{stage}-broker-check")
    async def broker_check() -> None:
        await chores.broker_check()

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(app_: Any, revoked: Any, **kwargs: Any) -> None:
        if revoked:
            ownership.revoke()
            if runtime.producer is not None:
                runtime.producer.forget_positions()  # they may change level on another instance now
        runner = state.get("runner")
        if runner is not None and revoked:
            runner.forget_held()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(app_: Any, assigned: Any, **kwargs: Any) -> None:
        _own_assignment(app, ownership, stage)
        runner = state.get("runner")
        if runner is not None and assigned:
            await runner.reload()

    if web_port is not None:
        from phoenix95.monitoring.health import Health, add_faust_pages, dependency_checks

        # /health (ready when the broker, PostgreSQL (migrated) and Redis answer) and /metrics
        health = Health(stage, dependency_checks(settings, "broker", "postgres", "redis", "timeseries"), port=web_port)
        add_faust_pages(app, health, metrics=metrics.exposition if metrics is not None else None)

    app.p95_runtime = runtime  # type: ignore[attr-defined]
    return app


def _own_assignment(app: Any, ownership: SymbolOwnership, stage: str) -> None:
    """Record the instance's whole assignment (before the state is rebuilt for it)."""
    assignment = app.consumer.assignment()
    ownership.assign((tp.topic, tp.partition) for tp in assignment)
    logger.info(
        "stage %s: assigned %s; owns partitions %s of %s",
        stage,
        ", ".join(sorted(f"{tp.topic}[{tp.partition}]" for tp in assignment)) or "nothing",
        sorted(ownership.assigned or ()),
        ownership.topic,
    )
