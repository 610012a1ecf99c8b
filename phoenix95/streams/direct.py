"""A stage worker whose consume loop runs on aiokafka's consumer directly, below Faust's stream.

`P95_KAFKA__CONSUMER_LOOP=direct` (`p95 worker --stage X` then runs this instead of a Faust worker).
Faust's per-event machinery (the conductor, an `Event` per message, the stream's channel queues, its
ack bookkeeping) cost ~80-110 µs of CPU per consumed message, more than the stages' own work on a
price (docs/performance.md). Here a batch is what `getmany` returns (up to `kafka.batch_max_records`,
or what arrived within the stage's `batch_within_s` of the first record), handed to the same
`StageRunner.run_batch` with the same guarantees:

- commit-after-write: `run_batch` acks a record only after its writes and outputs are done; an acked
  record's offset + 1 becomes committable for its partition (acks come in offset order per partition,
  a held record holds every later one back), and the committable offsets are committed every
  `kafka.commit_interval_s` while records flow, as soon as a fetch finds nothing (`IDLE_MS`), before
  a rebalance takes partitions away, and at a clean stop;
- one consumer group per stage (the group Faust used: offsets carry over between the two loops), the
  range assignor: co-partitioned inputs (`p95.orders` and `p95.market.prices`) get the same partition
  numbers on one instance, as the scale-out design needs (`streams/ownership.py`);
- on revocation the batch in flight finishes first (the runner's lock), its acks are committed, and
  held records are forgotten (re-delivered to the new owner); on assignment the stage rebuilds its
  state from the stores (`StageRunner.reload`);
- a batch holding several partitions is handed over in the order the broker took its records (their
  timestamps; each partition's own order kept), so a worker that joins late, or catches up after a
  pause, sees a price before the signal published after it, as a worker keeping up would
  (`in_arrival_order`);
- crash-only: an unexpected failure in a batch exits the process without committing it
  (`chores.run_until_done`); `p95 worker` restarts it.

The timers (the stage's clock, stats, system metrics, the broker-loss check) are `WorkerChores`, as in
the Faust app; /health and /metrics are served by uvicorn (`monitoring.health.serve_health`).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.structs import OffsetAndMetadata

from phoenix95.agents.base import from_consumer_record
from phoenix95.schemas.topics import Topics
from phoenix95.settings import Settings
from phoenix95.streams import stages
from phoenix95.streams.chores import (
    BROKER_CHECK_INTERVAL_S,
    STATS_LOG_INTERVAL_S,
    WorkerChores,
    consumer_highwater,
    freeze_startup_heap,
    run_until_done,
)
from phoenix95.streams.ownership import SymbolOwnership
from phoenix95.streams.wiring import StageRuntime

logger = logging.getLogger(__name__)

#: A fetch that finds nothing returns after this long: the loop then commits what it finished (the
#: consumer's own fetches to the broker go on every `fetch_max_wait_ms` regardless).
IDLE_MS = 50


def _timestamp(record: Any) -> int:
    return record.timestamp or 0


def in_arrival_order(batches: Iterable[Sequence[Any]]) -> list[Any]:
    """The records of several partitions' batches as one list ordered by their timestamps (when the
    broker took them), each partition's records still in offset order: a merge of the partitions,
    never a sort within one. One partition's batch is returned as it is."""
    parts = [batch for batch in batches if batch]
    if len(parts) <= 1:
        return list(parts[0]) if parts else []
    return list(heapq.merge(*parts, key=_timestamp))


class Offsets:
    """Per partition, the offset to commit next (the last acked record's + 1), and what is committed."""

    def __init__(self) -> None:
        self.acked: dict[TopicPartition, int] = {}
        self.committed: dict[TopicPartition, int] = {}

    async def ack(self, record: Any) -> None:
        tp = TopicPartition(record.topic, record.partition)
        if record.offset >= self.acked.get(tp, 0):
            self.acked[tp] = record.offset + 1

    def due(self, assigned: set[TopicPartition], only: set[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """What to commit: acked past the committed offset, of partitions still assigned."""
        return {
            tp: offset
            for tp, offset in self.acked.items()
            if tp in assigned and (only is None or tp in only) and offset > self.committed.get(tp, -1)
        }

    def forget(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self.acked.pop(tp, None)
            self.committed.pop(tp, None)


class DirectStageWorker:
    """One stage in this process on aiokafka's consumer (see the module docstring)."""

    def __init__(
        self, settings: Settings, stage: str, *, web_port: int | None = None, metrics: Any = None, lag: Any = None
    ):
        self.settings = settings
        self.stage = stage
        self.spec = stages.spec(stage)
        self.topics = Topics(settings.namespace)
        self.web_port = web_port
        self.metrics = metrics
        self.lag = lag
        self.runtime = StageRuntime(settings, stage, metrics=metrics, lag=lag)
        self.ownership = self.runtime.ownership = SymbolOwnership(
            self.topics.name(self.spec.inputs[0]), settings.kafka.partitions
        )
        self.offsets = Offsets()
        self.consumer: AIOKafkaConsumer | None = None
        self.runner: Any = None
        self.chores = WorkerChores(settings, stage, self.runtime, lambda: self.runner, self.highwater)
        self._stopping = asyncio.Event()
        self._last_commit = 0.0

    # -- the consumer's view ------------------------------------------------------------------------

    def highwater(self, tp: tuple[str, int], max_age_s: float = 5.0) -> int | None:
        """The partition's high watermark from this consumer's last fetch, if at most `max_age_s` old."""
        return consumer_highwater(self.consumer, tp, max_age_s)

    def _assigned(self) -> set[TopicPartition]:
        return set(self.consumer.assignment()) if self.consumer is not None else set()

    async def commit(self, only: set[TopicPartition] | None = None) -> None:
        """Commit what was acked (of `only`, if given). A failed commit is logged: the records are
        re-delivered after a restart or a rebalance, and their writes are idempotent."""
        self._last_commit = time.monotonic()
        if self.consumer is None:
            return
        due = self.offsets.due(self._assigned(), only)
        if not due:
            return
        try:
            await self.consumer.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in due.items()})
        except Exception as error:
            logger.warning("stage %s: committing %d partitions failed: %s", self.stage, len(due), error)
            return
        self.offsets.committed.update(due)

    # -- rebalances -----------------------------------------------------------------------------------

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        if not revoked:
            return
        runner = self.runner
        if runner is not None:
            async with runner._lock:  # the batch in flight finishes (and acks) first
                await self.commit(set(revoked))
                runner.forget_held()
        else:
            await self.commit(set(revoked))
        self.offsets.forget(set(revoked))
        self.ownership.revoke()
        if self.runtime.producer is not None:
            self.runtime.producer.forget_positions()  # they may change level on another instance now

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        assignment = self._assigned()
        self.ownership.assign((tp.topic, tp.partition) for tp in assignment)
        logger.info(
            "stage %s: assigned %s; owns partitions %s of %s",
            self.stage,
            ", ".join(sorted(f"{tp.topic}[{tp.partition}]" for tp in assignment)) or "nothing",
            sorted(self.ownership.assigned or ()),
            self.ownership.topic,
        )
        if self.runner is not None and assigned:
            await self.runner.reload()

    # -- running --------------------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        kafka = self.settings.kafka
        health_server = await self._serve_health()
        reader = getattr(getattr(self.lag, "monitor", None), "reader", None)
        if reader is not None and hasattr(reader, "local_highwater"):
            reader.local_highwater = lambda tp: self.highwater(tp)
        self.runner = await self.runtime.start()
        freeze_startup_heap()
        names = [self.topics.name(name) for name in self.spec.inputs]
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap_servers,
            group_id=self.topics.group(self.stage),
            client_id=f"phoenix95-{self.stage}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self.spec.fetch_wait_ms(self.settings),
            max_poll_records=kafka.batch_max_records,
            session_timeout_ms=int(kafka.session_timeout_s * 1000),
            heartbeat_interval_ms=int(kafka.heartbeat_interval_s * 1000),
            rebalance_timeout_ms=int(kafka.rebalance_timeout_s * 1000),
            request_timeout_ms=int(kafka.request_timeout_s * 1000),
            partition_assignment_strategy=(RangePartitionAssignor,),
        )
        self.consumer.subscribe(names, listener=_Listener(self))
        chores = [
            asyncio.create_task(self._every(STATS_LOG_INTERVAL_S, self._stats), name="stats"),
            asyncio.create_task(
                self._every(self.settings.metrics.system_interval_s, self.chores.system_metrics), name="system"
            ),
            asyncio.create_task(self._every(BROKER_CHECK_INTERVAL_S, self.chores.broker_check), name="broker"),
        ]
        interval = self.spec.timer(self.settings)
        if interval:
            chores.append(asyncio.create_task(self._every(interval, self._tick), name="clock"))
        try:
            await self.consumer.start()
            logger.info("stage %s: consuming %s", self.stage, ", ".join(names))
            await self._consume()
        finally:
            for task in chores:
                task.cancel()
            for task in chores:
                with contextlib.suppress(BaseException):
                    await task
            with contextlib.suppress(Exception):
                if self.runner is not None:
                    async with self.runner._lock:
                        await self.commit()
            await self.runtime.stop()
            with contextlib.suppress(Exception):
                await self.consumer.stop()  # leaves the group: the others get its partitions at once
            if health_server is not None:
                await health_server.stop()
            logger.info("stage %s: stopped", self.stage)

    async def _consume(self) -> None:
        assert self.consumer is not None
        kafka = self.settings.kafka
        within = self.spec.batch_within_s(self.settings)
        limit = kafka.batch_max_records
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                fetch = asyncio.ensure_future(self.consumer.getmany(timeout_ms=IDLE_MS, max_records=limit))
                await asyncio.wait((fetch, stopping), return_when=asyncio.FIRST_COMPLETED)
                if not fetch.done():
                    fetch.cancel()
                    with contextlib.suppress(BaseException):
                        await fetch
                    break
                batches = {tp: list(batch) for tp, batch in fetch.result().items()}
                read = sum(map(len, batches.values()))
                if read and read < limit and within > 0:
                    deadline = time.monotonic() + within
                    while read < limit and (left := deadline - time.monotonic()) > 0:
                        more = await self.consumer.getmany(
                            timeout_ms=max(1, int(left * 1000)), max_records=limit - read
                        )
                        for tp, batch in more.items():
                            batches.setdefault(tp, []).extend(batch)
                            read += len(batch)
                if read:
                    records = in_arrival_order(batches.values())
                    await run_until_done(self.runner, records, self.offsets.ack, read=from_consumer_record)
                # every commit_interval_s while records flow, and at once when they stop (a fetch
                # that found nothing): what was done is committed without waiting for the interval
                # (after a burst, the re-delivery window of a crash is empty, and `p95 lag` shows 0)
                if not read or time.monotonic() - self._last_commit >= kafka.commit_interval_s:
                    await self.commit()
        finally:
            stopping.cancel()

    async def _tick(self) -> None:
        if self.runner is not None:
            await self.runner.tick(self.offsets.ack)

    async def _stats(self) -> None:
        self.chores.stats_log()

    async def _every(self, seconds: float, work: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await work()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("stage %s: timer %s failed", self.stage, getattr(work, "__name__", work))

    async def _serve_health(self) -> Any:
        if self.web_port is None:
            return None
        from phoenix95.monitoring.health import Health, dependency_checks, serve_health

        health = Health(
            self.stage,
            dependency_checks(self.settings, "broker", "postgres", "redis", "timeseries"),
            port=self.web_port,
        )
        exposition = self.metrics.exposition if self.metrics is not None else None
        return await serve_health(health, self.settings.metrics.host, self.web_port, metrics=exposition)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: DirectStageWorker):
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.worker.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.worker.on_assigned(set(assigned))


def run_direct_stage(settings: Settings, stage: str, *, web_port: int | None, metrics: Any, lag: Any) -> None:
    worker = DirectStageWorker(settings, stage, web_port=web_port, metrics=metrics, lag=lag)
    asyncio.run(worker.run())
