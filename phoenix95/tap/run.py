"""The read loop: poll, cut at the stop offsets and `--until`, render, write.

A large read is split by partition over worker processes (`parallel.py`), each with its own
consumer, renderer and this same loop; the per-partition order is kept, and a shared lock keeps
each written chunk whole.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from phoenix95.tap.decode import RawRecord
from phoenix95.tap.plan import PartitionPlan, ReadPlan
from phoenix95.tap.render import Renderer, RenderOptions
from phoenix95.tap.source import Client, Partition, Source, open_source

#: Below this many records to read, starting worker processes costs more than it saves.
PARALLEL_THRESHOLD = 20_000
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


class LocalOutput:
    def __init__(self, out: BinaryIO, count: int | None):
        self.out = out
        self.remaining = count
        self.shown = 0

    def write(self, shown: list[bytes]) -> bool:
        if self.remaining is not None:
            shown = shown[: self.remaining]
            self.remaining -= len(shown)
        if shown:
            self.out.write(b"".join(shown))
            self.out.flush()
            self.shown += len(shown)
        return self.remaining is None or self.remaining > 0


def choose_jobs(plan: ReadPlan, render: RenderOptions, options: ReadOptions) -> int:
    """Processes to read with: as asked, else one per core for a large read in json or raw."""
    open_partitions = sum(1 for p in plan.partitions.values() if not p.finished)
    if options.jobs > 0:
        return max(1, min(options.jobs, open_partitions))
    if render.format == "pretty" or open_partitions <= 1:
        return 1
    to_read = plan.to_read
    if to_read is not None and to_read < PARALLEL_THRESHOLD:
        return 1
    if options.count is not None and options.count < PARALLEL_THRESHOLD and not render.filters.active:
        return 1
    return max(1, min(os.cpu_count() or 1, open_partitions))


def split_partitions(partitions: dict[Partition, PartitionPlan], jobs: int) -> list[dict[Partition, PartitionPlan]]:
    """`jobs` groups of partitions with about as many records to read each (largest first)."""
    groups: list[dict[Partition, PartitionPlan]] = [{} for _ in range(jobs)]
    loads = [0] * jobs

    def size(plan: PartitionPlan) -> int:
        return (plan.stop if plan.stop is not None else plan.end_at_start) - plan.start

    for partition, part in sorted(partitions.items(), key=lambda item: -size(item[1])):
        lightest = loads.index(min(loads))
        groups[lightest][partition] = part
        loads[lightest] += max(size(part), 1)
    return [group for group in groups if group]


def read(
    bootstrap: str,
    plan: ReadPlan,
    render: RenderOptions,
    options: ReadOptions,
    out: BinaryIO,
) -> ReadStats:
    jobs = choose_jobs(plan, render, options) if _has_file_descriptor(out) else 1
    active = {tp: p for tp, p in plan.partitions.items() if not p.finished}
    if jobs > 1:
        from phoenix95.tap.parallel import read_in_processes

        return read_in_processes(bootstrap, split_partitions(active, jobs), render, options, out)
    started = time.perf_counter()
    output = LocalOutput(out, options.count)
    stats = read_partitions(bootstrap, active, Renderer(render), options, output)
    stats.shown = output.shown
    stats.seconds = time.perf_counter() - started
    return stats


def _has_file_descriptor(out: BinaryIO) -> bool:
    try:
        out.fileno()
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is both
        return False
    return True


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
