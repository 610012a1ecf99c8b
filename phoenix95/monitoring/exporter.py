"""Lag figures as Prometheus metrics: a collector over a monitor's latest snapshot, and the standalone
exporter (`p95 lag --serve`). A worker can register the same collector in its own registry."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from phoenix95.monitoring.heartbeats import HeartbeatCollector, HeartbeatWatch
from phoenix95.monitoring.monitor import LagMonitor
from phoenix95.monitoring.status import GROUP_STATUSES, PARTITION_STATUSES, SEVERITY

logger = logging.getLogger(__name__)

#: Seconds between reads of the workers' heartbeat keys (they are written every few seconds).
HEARTBEAT_INTERVAL_S = 5.0
_PARTITION_LABELS = ["group", "stage", "topic", "partition"]
_GROUP_LABELS = ["group", "stage"]


class LagCollector(Collector):
    """Exposes the monitor's latest snapshot; collecting never touches the broker."""

    def __init__(self, monitor: LagMonitor):
        self.monitor = monitor

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        yield from self._families(fill=True)

    def _families(self, fill: bool = False) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "p95_consumer_lag_messages", "Messages the group has not consumed yet", labels=_PARTITION_LABELS
        )
        age = GaugeMetricFamily(
            "p95_consumer_lag_seconds",
            "Age of the oldest unconsumed message (0 when caught up)",
            labels=_PARTITION_LABELS,
        )
        committed = GaugeMetricFamily(
            "p95_consumer_committed_offset", "Offset the group committed", labels=_PARTITION_LABELS
        )
        end = GaugeMetricFamily("p95_topic_end_offset", "Offset of the next message", labels=["topic", "partition"])
        partition_status = GaugeMetricFamily(
            "p95_consumer_partition_status",
            "Burrow-style partition status (1 for the current one)",
            labels=[*_PARTITION_LABELS, "status"],
        )
        group_lag = GaugeMetricFamily(
            "p95_consumer_group_lag_messages", "Unconsumed messages of the group", labels=_GROUP_LABELS
        )
        group_age = GaugeMetricFamily(
            "p95_consumer_group_lag_seconds",
            "Age of the group's oldest unconsumed message (0 when caught up)",
            labels=_GROUP_LABELS,
        )
        group_status = GaugeMetricFamily(
            "p95_consumer_group_status",
            "Burrow-style group status (1 for the current one)",
            labels=[*_GROUP_LABELS, "status"],
        )
        group_code = GaugeMetricFamily(
            "p95_consumer_group_status_code",
            "Worst partition status: 0 OK, 1 WARN, 2 REWIND, 3 STALL, 4 STOP",
            labels=_GROUP_LABELS,
        )
        samples = CounterMetricFamily("p95_lag_samples", "Lag samples taken")
        errors = CounterMetricFamily("p95_lag_sample_errors", "Lag samples that failed")
        duration = GaugeMetricFamily("p95_lag_sample_duration_seconds", "Duration of the last lag sample")
        last = GaugeMetricFamily("p95_lag_last_sample_timestamp_seconds", "When the last lag sample was taken")
        snapshot = self.monitor.latest if fill else None
        if fill:
            samples.add_metric([], self.monitor.samples_total)
            errors.add_metric([], self.monitor.errors_total)
            duration.add_metric([], self.monitor.last_duration_s)
        if snapshot is not None:
            last.add_metric([], snapshot.taken_at.timestamp())
            ends: dict[tuple[str, str], int] = {}
            for p in snapshot.partitions:
                labels = [p.group, p.stage or "", p.topic, str(p.partition)]
                lag.add_metric(labels, p.lag)
                if p.lag_seconds is not None:
                    age.add_metric(labels, p.lag_seconds)
                if p.committed is not None:
                    committed.add_metric(labels, p.committed)
                ends[(p.topic, str(p.partition))] = p.end
                for status in PARTITION_STATUSES:
                    partition_status.add_metric([*labels, status.value], 1.0 if p.status == status else 0.0)
            for (topic, partition), offset in sorted(ends.items()):
                end.add_metric([topic, partition], offset)
            for g in snapshot.groups:
                labels = [g.group, g.stage or ""]
                group_lag.add_metric(labels, g.lag)
                if g.lag_seconds is not None:
                    group_age.add_metric(labels, g.lag_seconds)
                for status in GROUP_STATUSES:
                    group_status.add_metric([*labels, status.value], 1.0 if g.status == status else 0.0)
                group_code.add_metric(labels, SEVERITY[g.worst])
        yield from (lag, age, committed, end, partition_status, group_lag, group_age, group_status, group_code)
        yield from (samples, errors, duration, last)


def exporter_registry(monitor: LagMonitor, heartbeats: HeartbeatWatch | None = None) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(LagCollector(monitor))
    registry.register(HeartbeatCollector(heartbeats))
    ProcessCollector(registry=registry)
    return registry


async def serve(
    monitor: LagMonitor, *, host: str, port: int, interval_s: float, heartbeats: HeartbeatWatch | None = None
) -> None:
    """Serve /metrics on host:port and sample every `interval_s` until cancelled (the workers'
    heartbeats too, when given: every `HEARTBEAT_INTERVAL_S` at most as often as the lag)."""
    server, thread = start_http_server(port, addr=host, registry=exporter_registry(monitor, heartbeats))
    logger.info("lag exporter: http://%s:%d/metrics, sampling every %.1fs", host, port, interval_s)
    beating = (
        asyncio.create_task(heartbeats.run(max(interval_s, HEARTBEAT_INTERVAL_S)), name="p95-lag-heartbeats")
        if heartbeats is not None
        else None
    )
    try:
        await monitor.run(interval_s)
    finally:
        if beating is not None:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await beating
        await asyncio.to_thread(server.shutdown)
        server.server_close()
        thread.join(timeout=5)
