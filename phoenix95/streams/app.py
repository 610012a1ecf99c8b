"""The Faust app factory: one app (= one consumer group) per stage, so stages run as separate
processes, scale and lag independently, and a crash of one does not rebalance the others."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from pathlib import Path
from typing import Any

import faust
from aiokafka import TopicPartition

from phoenix95.connectors.kafka_admin import ensure_topics, lost_partitions
from phoenix95.schemas.topics import Topics
from phoenix95.settings import Settings
from phoenix95.streams import stages
from phoenix95.streams.ownership import SymbolOwnership
from phoenix95.streams.system_metrics import SystemMetricsReporter
from phoenix95.streams.transport import TunedApp, fresh_highwater
from phoenix95.streams.wiring import StageRuntime

logger = logging.getLogger(__name__)
#: Exit code of a stage process that stopped on an unexpected failure (restarted by `p95 worker`).
CRASH_EXIT_CODE = 70
#: Exit code of a stage process that found its broker had lost its data (restarted by `p95 worker`).
BROKER_RESET_EXIT_CODE = 75
STATS_LOG_INTERVAL_S = float(os.environ.get("P95_STATS_LOG_INTERVAL_S", "30"))
BROKER_CHECK_INTERVAL_S = 3.0


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
                await _run_until_done(runner, events, stream)
        finally:
            await runtime.stop()

    interval = spec.timer(settings)
    if interval:

        @app.timer(interval, name=f"p95-{stage}-clock")
        async def stage_clock() -> None:
            runner, stream = state.get("runner"), state.get("stream")
            if runner is not None and stream is not None:
                await runner.tick(stream.ack)

    @app.timer(STATS_LOG_INTERVAL_S, name=f"p95-{stage}-stats")
    async def stats_log() -> None:
        runner = state.get("runner")
        if runner is not None and runner.stats.batches != state.get("logged_batches"):
            state["logged_batches"] = runner.stats.batches
            logger.info("stage %s: %s", stage, runner.stats.summary(runner.held))

    @app.timer(settings.metrics.system_interval_s, name=f"p95-{stage}-system-metrics")
    async def system_metrics() -> None:
        runner = state.get("runner")
        if runner is None:
            return
        reporter = state.get("reporter")
        if reporter is None:
            reporter = state["reporter"] = SystemMetricsReporter(
                stage,
                lambda: (runner.stats, runner.held),
                runtime.redis,
                runtime.timeseries,
                namespace=settings.namespace,
                environment=settings.environment,
            )
        await reporter.report(timeout=settings.metrics.system_interval_s)

    @app.timer(BROKER_CHECK_INTERVAL_S, name=f"p95-{stage}-broker-check")
    async def broker_check() -> None:
        """After a broker lost its data (Tansu keeps topics in memory: a restart empties it), put
        the topics back, and restart this worker if its inputs went below what it had read: Faust
        silently drops messages below the offsets it has seen, so only a fresh consumer reads the
        new log from its start. `p95 worker` (or any supervisor) starts it again."""
        runner = state.get("runner")
        try:
            created = await ensure_topics(
                kafka.bootstrap_servers,
                topics.all(),
                partitions=kafka.partitions,
                replication_factor=kafka.replication_factor,
                counts=topics.partition_counts(kafka.partitions, settings.risk.clock),
            )
            if runner is None or not runner.read_offsets:
                return
            # The consumer's own fetch responses say where each partition ends: a log still past
            # what was read needs no request (a lookup costs the broker CPU in proportion to the
            # partition's batches). Only a partition whose high watermark is not past it, or is not
            # fresh, is looked up.
            read = {
                TopicPartition(topic, partition): offset
                for (topic, partition), offset in runner.read_offsets.items()
                if (fresh_highwater(app, (topic, partition), max_age_s=30.0) or 0) <= offset
            }
            if not read:
                state["behind"] = False
                return
            lost = await lost_partitions(kafka.bootstrap_servers, read)
        except Exception as error:  # the broker is down: Faust's own reconnects handle that
            logger.debug("stage %s: broker check failed: %s", stage, error)
            return
        behind = [f"{tp.topic}[{tp.partition}] no longer holds offset {read[tp]}" for tp in lost]
        # Twice in a row (3 s apart) before acting: one reading could race a write.
        suspicious, state["behind"] = state.get("behind", False), bool(behind)
        if behind and suspicious:
            logger.critical(
                "stage %s: the broker lost data (%s%s); restarting this worker to read the new log from its start",
                stage,
                "; ".join(behind[:4]),
                f"; recreated {len(created)} topics" if created else "",
            )
            logging.shutdown()
            os._exit(BROKER_RESET_EXIT_CODE)

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


def freeze_startup_heap() -> None:
    """Take what the worker built while starting (Faust, the clients, the stage's state) out of the
    cyclic garbage collector's sight: its collections then go through what the stream creates, not
    the whole heap again and again (per record, measured by benchmarks/consume_loop_cpu.py). A cycle
    among the frozen objects is never collected; they live as long as the process anyway."""
    gc.collect()
    gc.freeze()


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


async def _run_until_done(runner: Any, events: Any, stream: Any) -> None:
    """Run a batch. Bad input never gets here (it is dead-lettered) and the stores' transient
    failures are retried inside; an exception here is a bug or a broken invariant. Crash-only: the
    process exits without acking, so nothing is committed past the batch, and the supervisor
    restarts the stage, which re-reads its state from the stores (Faust would otherwise ack the
    batch and move on)."""
    try:
        await runner.run_batch(events, stream.ack)
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.critical(
            "stage %s: unexpected failure; exiting so the batch is re-delivered", runner.stage.name, exc_info=True
        )
        logging.shutdown()
        os._exit(CRASH_EXIT_CODE)
