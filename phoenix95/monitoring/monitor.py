"""Sampling consumer lag: which groups to watch, one snapshot per sample, and the sampling loop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from phoenix95.monitoring.offsets import OffsetReader, PartitionOffsets
from phoenix95.monitoring.status import PartitionWindow, Sample, Status, StatusRules, group_status, worst
from phoenix95.schemas.topics import Topics
from phoenix95.streams import stages as registry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupTarget:
    """A consumer group and the topics it is watched on; `stage` is set for the pipeline's groups."""

    group: str
    topics: tuple[str, ...]
    stage: str | None = None

    def only(self, topics: Collection[str]) -> GroupTarget:
        return GroupTarget(self.group, tuple(t for t in self.topics if t in topics), self.stage)


def pipeline_targets(namespace: str, stages: Sequence[str] | None = None) -> list[GroupTarget]:
    """The pipeline's consumer groups (one per stage) and the topics each stage consumes."""
    topics = Topics(namespace)
    return [
        GroupTarget(topics.group(stage), tuple(topics.name(base) for base in registry.spec(stage).inputs), stage)
        for stage in (stages or registry.STAGES)
    ]


async def discover_targets(
    reader: OffsetReader, groups: Sequence[str] | None, pipeline: Sequence[GroupTarget]
) -> list[GroupTarget]:
    """Targets for the named groups (all groups when None). A pipeline group is watched on its inputs;
    any other group on the topics it has committed offsets on."""
    names = list(groups) if groups else await reader.groups()
    known = {target.group: target for target in pipeline}
    candidates: list[str] | None = None
    found = []
    for name in names:
        if name in known:
            found.append(known[name])
            continue
        if candidates is None:
            candidates = await reader.topics()
        found.append(GroupTarget(name, tuple(await reader.topics_committed_by(name, candidates))))
    return found


@dataclass(frozen=True)
class PartitionLag:
    group: str
    stage: str | None
    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int
    #: Age of the oldest unconsumed message (0 when caught up; None when it could not be read).
    lag_seconds: float | None
    status: Status

    def row(self) -> dict[str, Any]:
        return {
            "kind": "partition",
            "group": self.group,
            "stage": self.stage,
            "topic": self.topic,
            "partition": self.partition,
            "committed": self.committed,
            "end": self.end,
            "lag": self.lag,
            "lag_seconds": _rounded(self.lag_seconds),
            "status": self.status.value,
        }


@dataclass(frozen=True)
class GroupLag:
    group: str
    stage: str | None
    #: Burrow's group status: OK, WARN or ERR.
    status: Status
    #: The most severe partition status.
    worst: Status
    lag: int
    lag_seconds: float | None
    partitions: int

    def row(self) -> dict[str, Any]:
        return {
            "kind": "group",
            "group": self.group,
            "stage": self.stage,
            "topic": None,
            "partition": None,
            "committed": None,
            "end": None,
            "lag": self.lag,
            "lag_seconds": _rounded(self.lag_seconds),
            "status": self.status.value,
            "worst": self.worst.value,
            "partitions": self.partitions,
        }


@dataclass(frozen=True)
class LagSnapshot:
    taken_at: datetime
    partitions: tuple[PartitionLag, ...]
    groups: tuple[GroupLag, ...]

    @property
    def ok(self) -> bool:
        return all(group.status == Status.OK for group in self.groups)

    def rows(self) -> list[dict[str, Any]]:
        """Per group: its partition rows, then its summary row (`kind` tells them apart)."""
        rows: list[dict[str, Any]] = []
        for group in self.groups:
            rows.extend(p.row() for p in self.partitions if p.group == group.group)
            rows.append(group.row())
        return rows

    def max_lag_seconds(self, groups: Collection[str] | None = None) -> float | None:
        """The oldest unconsumed message over the groups' partitions: 0 when all are caught up, None
        when a lagging partition's message could not be read."""
        return _oldest([p for p in self.partitions if groups is None or p.group in groups])


class LagMonitor:
    """Samples the targets' offsets and keeps, per partition, the window the status is judged on."""

    def __init__(
        self,
        reader: OffsetReader,
        targets: Sequence[GroupTarget],
        *,
        rules: StatusRules | None = None,
        sample_timeout_s: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.reader = reader
        self.targets = list(targets)
        self.rules = rules or StatusRules()
        self.sample_timeout_s = sample_timeout_s
        self._monotonic = monotonic
        self._wall = wall
        self._windows: dict[tuple[str, str, int], PartitionWindow] = {}
        self.latest: LagSnapshot | None = None
        self.samples_total = 0
        self.errors_total = 0
        self.last_duration_s = 0.0

    async def sample(self) -> LagSnapshot:
        started = time.perf_counter()
        at, now = self._monotonic(), self._wall()
        offsets = await asyncio.wait_for(
            self.reader.read({target.group: target.topics for target in self.targets}), self.sample_timeout_s
        )
        partitions: list[PartitionLag] = []
        groups: list[GroupLag] = []
        for target in self.targets:
            rows = [self._judge(target, row, at, now) for row in offsets.get(target.group, [])]
            partitions.extend(rows)
            statuses = [row.status for row in rows]
            total = sum(row.lag for row in rows)
            oldest = _oldest(rows)
            groups.append(
                GroupLag(target.group, target.stage, group_status(statuses), worst(statuses), total, oldest, len(rows))
            )
        self.latest = LagSnapshot(now, tuple(partitions), tuple(groups))
        self.samples_total += 1
        self.last_duration_s = time.perf_counter() - started
        return self.latest

    def _judge(self, target: GroupTarget, offsets: PartitionOffsets, at: float, now: datetime) -> PartitionLag:
        key = (target.group, offsets.topic, offsets.partition)
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = PartitionWindow(self.rules)
        window.add(Sample(at, offsets.position, offsets.end))
        if offsets.lag == 0:
            age: float | None = 0.0
        elif offsets.oldest_unconsumed_ms is None or offsets.oldest_unconsumed_ms < 0:
            age = None
        else:
            age = max(0.0, now.timestamp() - offsets.oldest_unconsumed_ms / 1000)
        return PartitionLag(
            target.group,
            target.stage,
            offsets.topic,
            offsets.partition,
            offsets.committed,
            offsets.end,
            offsets.lag,
            age,
            window.status(at),
        )

    async def run(self, interval_s: float, on_snapshot: Callable[[LagSnapshot], None] | None = None) -> None:
        """Sample every `interval_s` until cancelled; a failed sample is logged and counted."""
        while True:
            started = self._monotonic()
            try:
                snapshot = await self.sample()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.errors_total += 1
                logger.warning("lag: sample failed: %s: %s", type(error).__name__, error)
            else:
                if on_snapshot is not None:
                    on_snapshot(snapshot)
            await asyncio.sleep(max(0.0, interval_s - (self._monotonic() - started)))


def _oldest(partitions: Sequence[PartitionLag]) -> float | None:
    """Age of the oldest unconsumed message of the partitions (None if one of them is unknown)."""
    ages = [p.lag_seconds for p in partitions]
    if any(age is None for age in ages):
        return None
    return max((age for age in ages if age is not None), default=0.0)


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)
