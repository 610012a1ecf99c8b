"""Prometheus metrics of a stage worker, served on its web port at /metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from phoenix95.schemas.envelope import utc_now
from phoenix95.schemas.messages import Order, PositionEvent

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)


class PipelineMetrics:
    def __init__(self, stage: str, registry: CollectorRegistry | None = None):
        self.stage = stage
        self.registry = registry or CollectorRegistry()
        self.processed = Counter(
            "p95_stage_processed_total", "Input records finished by a stage", ["stage"], registry=self.registry
        )
        self.dead_lettered = Counter(
            "p95_stage_dead_lettered_total",
            "Input records sent to the dead-letter topic",
            ["stage", "reason"],
            registry=self.registry,
        )
        self.failed = Counter(
            "p95_stage_failed_writes_total", "Inputs whose writes failed permanently", ["stage"], registry=self.registry
        )
        self.produced = Counter(
            "p95_stage_produced_total", "Events produced by a stage", ["stage"], registry=self.registry
        )
        self.batch_seconds = Histogram(
            "p95_stage_batch_seconds",
            "Decode to outputs written, per batch",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "p95_stage_batch_size", "Records per batch", ["stage"], buckets=_BATCH_BUCKETS, registry=self.registry
        )
        self.signal_to_order = Histogram(
            "p95_signal_to_order_seconds",
            "Signal ingest to order produced",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.signal_to_position = Histogram(
            "p95_signal_to_position_seconds",
            "Signal ingest to position opened",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

    def observe_batch(self, stage: str, size: int, seconds: float) -> None:
        self.batch_seconds.labels(stage).observe(seconds)
        self.batch_size.labels(stage).observe(size)

    def observe_outcomes(self, stage: str, outcomes: Sequence[Any]) -> None:
        now = utc_now()
        self.processed.labels(stage).inc(len(outcomes))
        for outcome in outcomes:
            if outcome.dead_letter is not None:
                self.dead_lettered.labels(stage, outcome.dead_letter.reason).inc()
            self.produced.labels(stage).inc(len(outcome.produce))
            for event in outcome.produce:
                if isinstance(event, Order) and event.status == "filled":
                    self.signal_to_order.observe(max(0.0, (now - event.ts_event).total_seconds()))
                elif isinstance(event, PositionEvent) and event.kind == "opened":
                    self.signal_to_position.observe(max(0.0, (now - event.ts_event).total_seconds()))

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
