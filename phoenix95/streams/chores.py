"""A stage worker's chores beside its consume loop, the same whichever loop runs it (`streams/app.py`,
Faust's stream; `streams/direct.py`, aiokafka's consumer): the stats line in the log, the system
metrics, the check that the broker still holds what was read, and the crash-only batch run."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import TopicPartition

from phoenix95.connectors.kafka_admin import ensure_topics, lost_partitions
from phoenix95.schemas.topics import Topics
from phoenix95.settings import Settings
from phoenix95.streams.system_metrics import SystemMetricsReporter

logger = logging.getLogger(__name__)

#: Exit code of a stage process that stopped on an unexpected failure (restarted by `p95 worker`).
CRASH_EXIT_CODE = 70
#: Exit code of a stage process that found its broker had lost its data (restarted by `p95 worker`).
BROKER_RESET_EXIT_CODE = 75
STATS_LOG_INTERVAL_S = float(os.environ.get("P95_STATS_LOG_INTERVAL_S", "30"))
BROKER_CHECK_INTERVAL_S = 3.0

#: The high watermark of an input partition from the worker's own consumer's last fetch, if at most
#: `max_age_s` old (None otherwise): `(topic, partition), max_age_s -> offset`.
Highwater = Callable[[tuple[str, int], float], "int | None"]


class WorkerChores:
    """The timers every stage worker runs; `runner()` is the stage's runner once it started (None before)."""

    def __init__(self, settings: Settings, stage: str, runtime: Any, runner: Callable[[], Any], highwater: Highwater):
        self.settings = settings
        self.stage = stage
        self.runtime = runtime
        self.runner = runner
        self.highwater = highwater
        self._logged_batches: int | None = None
        self._reporter: SystemMetricsReporter | None = None
        self._behind = False

    def stats_log(self) -> None:
        runner = self.runner()
        if runner is not None and runner.stats.batches != self._logged_batches:
            self._logged_batches = runner.stats.batches
            logger.info("stage %s: %s", self.stage, runner.stats.summary(runner.held))

    async def system_metrics(self) -> None:
        runner = self.runner()
        if runner is None:
            return
        if self._reporter is None:
            self._reporter = SystemMetricsReporter(
                self.stage,
                lambda: (runner.stats, runner.held),
                self.runtime.redis,
                self.runtime.timeseries,
                namespace=self.settings.namespace,
                environment=self.settings.environment,
            )
        await self._reporter.report(timeout=self.settings.metrics.system_interval_s)

    async def broker_check(self) -> None:
        """After a broker lost its data (Tansu keeps topics in memory: a restart empties it), put
        the topics back, and restart this worker if its inputs went below what it had read: a
        consumer silently drops messages below the offsets it has seen, so only a fresh consumer reads
        the new log from its start. `p95 worker` (or any supervisor) starts it again."""
        kafka, topics = self.settings.kafka, Topics(self.settings.namespace)
        runner = self.runner()
        try:
            created = await ensure_topics(
                kafka.bootstrap_servers,
                topics.all(),
                partitions=kafka.partitions,
                replication_factor=kafka.replication_factor,
                counts=topics.partition_counts(kafka.partitions, self.settings.risk.clock),
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
                if (self.highwater((topic, partition), 30.0) or 0) <= offset
            }
            if not read:
                self._behind = False
                return
            lost = await lost_partitions(kafka.bootstrap_servers, read)
        except Exception as error:  # the broker is down: the consumer's own reconnects handle that
            logger.debug("stage %s: broker check failed: %s", self.stage, error)
            return
        behind = [f"{tp.topic}[{tp.partition}] no longer holds offset {read[tp]}" for tp in lost]
        # Twice in a row (3 s apart) before acting: one reading could race a write.
        suspicious, self._behind = self._behind, bool(behind)
        if behind and suspicious:
            logger.critical(
                "stage %s: the broker lost data (%s%s); restarting this worker to read the new log from its start",
                self.stage,
                "; ".join(behind[:4]),
                f"; recreated {len(created)} topics" if created else "",
            )
            logging.shutdown()
            os._exit(BROKER_RESET_EXIT_CODE)


async def run_until_done(runner: Any, events: Sequence[Any], ack: Callable[[Any], Awaitable[Any]], **kw: Any) -> None:
    """Run a batch. Bad input never gets here (it is dead-lettered) and the stores' transient
    failures are retried inside; an exception here is a bug or a broken invariant. Crash-only: the
    process exits without acking, so nothing is committed past the batch, and the supervisor
    restarts the stage, which re-reads its state from the stores (Faust would otherwise ack the
    batch and move on)."""
    try:
        await runner.run_batch(events, ack, **kw)
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.critical(
            "stage %s: unexpected failure; exiting so the batch is re-delivered", runner.stage.name, exc_info=True
        )
        logging.shutdown()
        os._exit(CRASH_EXIT_CODE)


def freeze_startup_heap() -> None:
    """Take what the worker built while starting (the consumer, the clients, the stage's state) out of
    the cyclic garbage collector's sight: its collections then go through what the stream creates, not
    the whole heap again and again (per record, measured by benchmarks/consume_loop_cpu.py). A cycle
    among the frozen objects is never collected; they live as long as the process anyway."""
    gc.collect()
    gc.freeze()


def consumer_highwater(consumer: Any, tp: tuple[str, int], max_age_s: float = 5.0) -> int | None:
    """The high watermark of a partition from the aiokafka consumer's last fetch response, if that
    response is at most `max_age_s` old; None otherwise (not assigned, not fetched yet, or the
    consumer is paused or cannot reach the broker). Free: no request to the broker."""
    if consumer is None:
        return None
    partition = TopicPartition(tp[0], tp[1])
    try:
        if not consumer._subscription.is_assigned(partition):
            return None
        stamp = consumer.last_poll_timestamp(partition)
        highwater = consumer.highwater(partition)
    except Exception:
        return None
    if stamp is None or highwater is None or time.time() * 1000 - stamp > max_age_s * 1000:
        return None
    return int(highwater)
