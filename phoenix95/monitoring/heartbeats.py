"""Worker heartbeats for the lag exporter (`p95 lag --serve`): every stage worker writes its system
metrics to Redis (`{prefix}metrics:{stage}`, a 15 s TTL) every few seconds, with the time it did. A
key that expired is a worker that died or hangs, the same signal the notifications stage watches.

Exported per stage seen at least once since the exporter started (a stage never deployed raises no
alarm): `p95_worker_heartbeat_up` (1 while its key exists) and `p95_worker_heartbeat_age_seconds`
(since its last heartbeat; it keeps growing after the key expired)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)


class HeartbeatWatch:
    """The last heartbeat seen per stage, sampled from Redis."""

    def __init__(self, redis: Any, stages: Sequence[str], *, clock: Callable[[], float] = time.time):
        self.redis = redis
        self.stages = tuple(stages)
        self.clock = clock
        #: stage -> epoch seconds of its last heartbeat seen.
        self.last_seen: dict[str, float] = {}
        #: stage -> whether its key existed at the last sample.
        self.up: dict[str, bool] = {}

    async def sample(self) -> None:
        keys = [self.redis.keys.metrics(stage) for stage in self.stages]
        values = await self.redis.client.mget(keys)
        for stage, value in zip(self.stages, values, strict=True):
            if value is None:
                if stage in self.last_seen:
                    self.up[stage] = False
                continue
            self.up[stage] = True
            self.last_seen[stage] = _timestamp(value) or self.clock()

    def ages(self) -> dict[str, float]:
        now = self.clock()
        return {stage: max(0.0, now - seen) for stage, seen in self.last_seen.items()}

    async def run(self, interval_s: float) -> None:
        while True:
            try:
                await self.sample()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # Redis away: the ages grow, `up` keeps its last value
                logger.warning("heartbeats: cannot read Redis: %s", error)
            await asyncio.sleep(interval_s)


def _timestamp(value: bytes | str) -> float | None:
    try:
        sample = json.loads(value)
        return datetime.fromisoformat(sample["timestamp"]).timestamp()
    except (ValueError, KeyError, TypeError):
        return None


class HeartbeatCollector(Collector):
    def __init__(self, watch: HeartbeatWatch | None):
        self.watch = watch

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        yield from self._families(fill=True)

    def _families(self, fill: bool = False) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "p95_worker_heartbeat_up", "1 while the stage worker's heartbeat key exists in Redis", labels=["stage"]
        )
        age = GaugeMetricFamily(
            "p95_worker_heartbeat_age_seconds", "Seconds since the stage worker's last heartbeat", labels=["stage"]
        )
        if fill and self.watch is not None:
            for stage, seconds in sorted(self.watch.ages().items()):
                age.add_metric([stage], round(seconds, 3))
                up.add_metric([stage], 1.0 if self.watch.up.get(stage) else 0.0)
        yield from (up, age)
