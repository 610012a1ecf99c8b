"""The read loop: poll, cut at the stop offsets and `--until`, render, write.

One process runs it over all partitions (`run.py`), or each worker process of a large read over its
share (`parallel.py`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from phoenix95.tap.decode import RawRecord
from phoenix95.tap.plan import PartitionPlan
from phoenix95.tap.render import Renderer
from phoenix95.tap.source import Client, Partition, Source, open_source

#: After `--until` has passed on the wall clock, records still in flight get this long to arrive.
UNTIL_GRACE_S = 2.0


@dataclass(frozen=True)
class ReadOptions:
    count: int | None = None
    until_ms: int | None = None
    #: 0: decide (one process per core for large reads, see `choose_jobs`).
    jobs: int = 0
    client: Client = "auto"
    batch_size: int = 5000
    poll_timeout: float = 0.2


@dataclass
class ReadStats:
    read: int = 0
    shown: int = 0
    seconds: float = 0.0
    client: str = ""
    jobs: int = 1


class Output(Protocol):
    def write(self, shown: list[bytes]) -> bool:
        """Write formatted records; False when reading should stop (count reached, reader gone)."""
        ...


def read_partitions(
    bootstrap: str,
    partitions: dict[Partition, PartitionPlan],
    renderer: Renderer,
    options: ReadOptions,
    output: Output,
    *,
    should_stop: Callable[[], bool] = lambda: False,
) -> ReadStats:
    """Read the partitions from their start to their stop offsets (or forever), rendering to `output`."""
    stats = ReadStats()
    if not partitions:
        return stats
    source = open_source(bootstrap, {tp: p.start for tp, p in partitions.items()}, client=options.client)
    stats.client = source.name
    try:
        _Loop(partitions, options, renderer, output, stats).run(source, should_stop)
    finally:
        source.close()
    return stats


class _Loop:
    def __init__(
        self,
        partitions: dict[Partition, PartitionPlan],
        options: ReadOptions,
        renderer: Renderer,
        output: Output,
        stats: ReadStats,
    ):
        self.options = options
        self.renderer = renderer
        self.output = output
        self.stats = stats
        self.stops: dict[Partition, int] = {tp: p.stop for tp, p in partitions.items() if p.stop is not None}
        self.until = options.until_ms
        self.finished: set[Partition] = set()
        self.open_partitions = set(partitions)

    def run(self, source: Source, should_stop: Callable[[], bool]) -> None:
        cuts = bool(self.stops) or self.until is not None
        while self.open_partitions and not should_stop():
            records = source.poll(self.options.batch_size, self.options.poll_timeout)
            if records:
                self.stats.read += len(records)
                if cuts:
                    records = self._cut(records)
            else:
                self._finish_at_position(source)
            if records:
                shown = self.renderer.render(records)
                if shown and not self.output.write(shown):
                    return
            newly_finished = self.open_partitions & self.finished
            if newly_finished:
                self.open_partitions -= newly_finished
                source.pause(sorted(newly_finished))
            if not records and self.until is not None and time.time() * 1000 > self.until + UNTIL_GRACE_S * 1000:
                return

    def _cut(self, records: list[RawRecord]) -> list[RawRecord]:
        """Drop what lies past a partition's stop offset or `--until`; note finished partitions."""
        stops, until, finished = self.stops, self.until, self.finished
        kept = []
        for record in records:
            partition = (record[0], record[1])
            if partition in finished:
                continue
            stop = stops.get(partition)
            if (stop is not None and record[2] >= stop) or (until is not None and record[3] > until):
                finished.add(partition)
                continue
            kept.append(record)
            if stop is not None and record[2] + 1 >= stop:
                finished.add(partition)
        return kept

    def _finish_at_position(self, source: Source) -> None:
        """A partition whose position passed its stop offset without a record at stop - 1 (a gap)."""
        for partition in self.open_partitions - self.finished:
            stop = self.stops.get(partition)
            if stop is not None:
                position = source.position(partition)
                if position is not None and position >= stop:
                    self.finished.add(partition)
