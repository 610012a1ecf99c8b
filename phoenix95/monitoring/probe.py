"""The risk stage's view of pipeline lag: a background task samples the lag of some stages' consumer
groups every second or two, and `lag_seconds()` returns the cached figure without blocking.

When sampling fails (broker unreachable, a message that cannot be read), the figure is not frozen at its last value: past
`stale_after_s` the age of the last good sample is added to it, so a blind probe looks ever more
lagged and the risk stage ends up rejecting (fail safe) instead of trading on an old "all is well".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from phoenix95.monitoring.monitor import LagMonitor, LagSnapshot, pipeline_targets
from phoenix95.monitoring.offsets import OffsetReader
from phoenix95.monitoring.status import StatusRules

if TYPE_CHECKING:
    from phoenix95.settings import Settings

logger = logging.getLogger(__name__)

#: Stages whose lag makes new signals stale: the ones a signal passes before a verdict.
SIGNAL_PATH_STAGES: tuple[str, ...] = ("analysis", "risk")


class PipelineLagProbe:
    """Implements the risk stage's `LagProbe` protocol (`lag_seconds() -> float`)."""

    def __init__(
        self,
        bootstrap: str,
        namespace: str,
        stages: Sequence[str] = SIGNAL_PATH_STAGES,
        *,
        interval_s: float = 1.0,
        rules: StatusRules | None = None,
        stale_after_s: float | None = None,
    ):
        self.interval_s = interval_s
        self.stale_after_s = stale_after_s if stale_after_s is not None else max(3 * interval_s, 5.0)
        self.monitor = LagMonitor(OffsetReader(bootstrap), pipeline_targets(namespace, stages), rules=rules)
        self._task: asyncio.Task[None] | None = None
        self._measured = 0.0
        self._measured_at = time.monotonic()

    @classmethod
    def from_settings(cls, settings: Settings, stages: Sequence[str] = SIGNAL_PATH_STAGES) -> PipelineLagProbe:
        return cls(settings.kafka.bootstrap_servers, settings.namespace, stages)

    async def start(self, first_sample_timeout_s: float = 10.0) -> None:
        """Take a first sample (so the first decision sees a real figure), then sample in the background."""
        if self._task is not None:
            return
        self._measured_at = time.monotonic()
        await self.monitor.reader.start()
        try:
            await asyncio.wait_for(self._sample(), first_sample_timeout_s)
        except Exception as error:
            logger.warning("lag probe: first sample failed (%s); will keep trying", error)
        self._task = asyncio.create_task(
            self.monitor.run(self.interval_s, on_snapshot=self._remember), name="p95-lag-probe"
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.monitor.reader.stop()

    def lag_seconds(self) -> float:
        """Age of the oldest message the watched stages have not consumed, as of the last sample."""
        age = time.monotonic() - self._measured_at
        if age > self.stale_after_s:
            return self._measured + age
        return self._measured

    async def _sample(self) -> None:
        self._remember(await self.monitor.sample())

    def _remember(self, snapshot: LagSnapshot) -> None:
        measured = snapshot.max_lag_seconds()
        if measured is None:  # a lagging partition's oldest message could not be read: not a measurement
            logger.warning("lag probe: the age of an unconsumed message is unknown; keeping %.1fs", self._measured)
            return
        self._measured = measured
        self._measured_at = time.monotonic()
