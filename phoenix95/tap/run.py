"""A read: in this process, or for a large read split by partition over worker processes
(`parallel.py`), each with its own consumer, renderer and the same loop (`loop.py`); the
per-partition order is kept, and a shared lock keeps each written chunk whole.
"""

from __future__ import annotations

import os
import time
from typing import BinaryIO

from phoenix95.tap.loop import ReadOptions, ReadStats, read_partitions
from phoenix95.tap.plan import PartitionPlan, ReadPlan
from phoenix95.tap.render import Renderer, RenderOptions
from phoenix95.tap.source import Partition

#: Below this many records to read, starting worker processes costs more than it saves.
PARALLEL_THRESHOLD = 20_000


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
        from phoenix95.tap.parallel import read_in_processes  # multiprocessing only when needed

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
