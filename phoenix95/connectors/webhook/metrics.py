"""The webhook's Prometheus metrics: requests by outcome and source, answer and broker-confirmation times."""

from __future__ import annotations

from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Histogram

_ACK_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

RequestOutcome = Literal[
    "published", "duplicate", "too_large", "forbidden", "malformed", "unauthorized", "rate_limited", "invalid",
    "stale", "unavailable",
]  # fmt: skip


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "p95_webhook_requests_total", "Webhook requests by outcome", ["outcome", "source"], registry=self.registry
        )
        self.ack_seconds = Histogram(
            "p95_webhook_ack_seconds",
            "Request received to answer",
            ["outcome"],
            buckets=_ACK_BUCKETS,
            registry=self.registry,
        )
        self.publish_seconds = Histogram(
            "p95_webhook_publish_seconds", "Broker confirmation time", buckets=_ACK_BUCKETS, registry=self.registry
        )

    def observe(self, outcome: RequestOutcome, source: str | None, seconds: float) -> None:
        self.requests.labels(outcome, source or "-").inc()
        self.ack_seconds.labels(outcome).observe(seconds)
