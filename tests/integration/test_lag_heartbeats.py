"""`p95 lag --serve` notices a worker whose heartbeat stopped: the heartbeat keys the stage workers
write to Redis become `p95_worker_heartbeat_up` and `p95_worker_heartbeat_age_seconds` per stage seen."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from prometheus_client import generate_latest

from phoenix95.monitoring.exporter import exporter_registry
from phoenix95.monitoring.heartbeats import HeartbeatWatch
from phoenix95.monitoring.monitor import LagMonitor
from phoenix95.settings import get_settings
from phoenix95.storage.redis_state import RedisState

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).timestamp()

    def __call__(self) -> float:
        return self.now


def test_a_worker_whose_heartbeat_expired_is_exported_as_down_with_a_growing_age(namespace) -> None:
    settings = get_settings()
    clock = Clock()

    async def scenario() -> tuple[str, str, dict[str, float]]:
        redis = RedisState.from_url(settings.redis_url(), prefix=settings.redis.prefix)
        try:
            watch = HeartbeatWatch(redis, ("analysis", "risk", "notifications"), clock=clock)
            await redis.set_metrics("risk", {"timestamp": datetime.fromtimestamp(clock.now - 2, UTC).isoformat()})
            await redis.set_metrics("notifications", {"timestamp": datetime.fromtimestamp(clock.now, UTC).isoformat()})
            await watch.sample()
            registry = exporter_registry(LagMonitor(None, []), watch)  # type: ignore[arg-type]
            alive = generate_latest(registry).decode()
            await redis.client.delete(redis.keys.metrics("risk"))  # the key expired: the worker is gone
            clock.now += 60
            await watch.sample()
            return alive, generate_latest(registry).decode(), watch.ages()
        finally:
            await redis.close()

    alive, dead, ages = asyncio.run(scenario())
    assert 'p95_worker_heartbeat_up{stage="risk"} 1.0' in alive
    assert 'p95_worker_heartbeat_age_seconds{stage="risk"} 2.0' in alive
    assert 'stage="analysis"' not in alive  # never seen: not deployed, no alarm
    assert 'p95_worker_heartbeat_up{stage="risk"} 0.0' in dead
    assert 'p95_worker_heartbeat_up{stage="notifications"} 1.0' in dead
    assert ages["risk"] == pytest.approx(62.0)
