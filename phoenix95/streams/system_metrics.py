"""A worker's own system metrics, reported every few seconds to Redis (``s4:metrics:{stage}``, which
expires when the worker stops reporting) and to the time series (``s4_system_metrics``), the seed's
shape: CPU, memory, and the stage's rates. Telemetry only: floats, and a failed report is logged,
never retried at the expense of the stage."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psutil

from phoenix95.agents.base import StageStats
from phoenix95.storage.redis_state import RedisState
from phoenix95.storage.timeseries import TimeseriesSink, system_line

logger = logging.getLogger(__name__)


@dataclass
class SystemMetricsReporter:
    stage: str
    stats: Callable[[], tuple[StageStats, int] | None]
    redis: RedisState | None
    timeseries: TimeseriesSink | None
    namespace: str = ""
    environment: str = "development"
    host: str = field(default_factory=socket.gethostname)
    clock: Callable[[], float] = time.monotonic
    _process: psutil.Process = field(default_factory=lambda: psutil.Process(os.getpid()))
    _started: float = 0.0
    _last: tuple[float, int, int] | None = None

    def __post_init__(self) -> None:
        self._started = self.clock()
        self._process.cpu_percent(None)  # the first call only starts the measurement

    def sample(self) -> dict[str, Any]:
        now = self.clock()
        current = self.stats()
        stats, held = current if current is not None else (StageStats(), 0)
        memory = psutil.virtual_memory()
        rss = self._process.memory_info().rss
        previous = self._last
        self._last = (now, stats.processed, stats.dead_lettered)
        elapsed = now - previous[0] if previous is not None else 0.0
        rate = (stats.processed - previous[1]) / elapsed if previous is not None and elapsed > 0 else 0.0
        errors = (stats.dead_lettered - previous[2]) / elapsed if previous is not None and elapsed > 0 else 0.0
        return {
            "service": self.stage,
            "host": self.host,
            "pid": os.getpid(),
            "cpu_percent": round(self._process.cpu_percent(None), 1),
            "cpu_count": psutil.cpu_count() or 0,
            "memory_percent": round(memory.percent, 1),
            "memory_used_mb": round(rss / 2**20, 1),
            "memory_available_mb": round(memory.available / 2**20, 1),
            "records_per_second": round(rate, 2),
            "dead_letters_per_second": round(errors, 3),
            "records_processed": stats.processed,
            "records_dead_lettered": stats.dead_lettered,
            "records_held": held,
            "batches": stats.batches,
            "average_batch": round(stats.processed / stats.batches, 1) if stats.batches else 0.0,
            "uptime_s": round(now - self._started, 1),
        }

    async def report(self, at: datetime | None = None, *, timeout: float = 5.0) -> dict[str, Any]:
        """Sample and write (giving up on a store after `timeout` seconds); returns the sample."""
        try:
            return await asyncio.wait_for(self._report(at), timeout)
        except TimeoutError:
            logger.warning("stage %s: system metrics not written within %.0fs", self.stage, timeout)
            return {}

    async def _report(self, at: datetime | None) -> dict[str, Any]:
        sample = self.sample()
        when = at or datetime.now(UTC)
        sample["timestamp"] = when.isoformat()
        if self.redis is not None:
            try:
                await self.redis.set_metrics(self.stage, sample)
            except Exception as error:
                logger.warning("stage %s: could not write system metrics to Redis: %s", self.stage, error)
        if self.timeseries is not None and self.timeseries.enabled:
            fields = {k: v for k, v in sample.items() if isinstance(v, int | float) and k != "pid"}
            entry = system_line(self.stage, self.host, self.environment, fields, when, self.namespace)
            if entry is not None:
                await self.timeseries.write_lines([entry])  # logs and drops on a permanent rejection
        return sample
