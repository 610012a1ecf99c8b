"""A large read in several processes: each reads its share of the partitions with its own consumer,
decodes and formats, and writes to the shared stdout under a lock (so chunks never interleave).

Why processes: decoding and formatting take ~90 % of the time and hold the GIL. Why each with its
own consumer, rather than one reader feeding a pool: pickling the records to the workers and back
cost more than it saved. `--count` is shared (a counter under the same lock), and so is stopping:
the first worker that meets the count or a closed pipe tells the others.

The workers are forked before any Kafka client exists in this process.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
import traceback
from dataclasses import dataclass
from multiprocessing.context import ForkContext
from typing import Any, BinaryIO

from phoenix95.tap.loop import ReadOptions, ReadStats, read_partitions
from phoenix95.tap.plan import PartitionPlan
from phoenix95.tap.render import Renderer, RenderOptions
from phoenix95.tap.source import Partition

NO_LIMIT = -1


@dataclass
class _Shared:
    lock: Any
    remaining: Any  # multiprocessing.Value("q"): records still to show, NO_LIMIT without --count
    stop: Any  # multiprocessing.Event
    results: Any  # multiprocessing.Queue of (read, shown, client, error)


class SharedOutput:
    """The Output of one worker: writes whole chunks under the shared lock, counts against --count."""

    def __init__(self, shared: _Shared, out: BinaryIO):
        self.shared = shared
        self.out = out
        self.shown = 0
        self.pipe_closed = False

    def write(self, shown: list[bytes]) -> bool:
        shared = self.shared
        with shared.lock:
            if shared.stop.is_set():
                return False
            remaining = shared.remaining.value
            if remaining != NO_LIMIT:
                shown = shown[:remaining]
                shared.remaining.value = remaining - len(shown)
            try:
                if shown:
                    self.out.write(b"".join(shown))
                    self.out.flush()
            except BrokenPipeError:
                self.pipe_closed = True
                shared.stop.set()
                return False
            self.shown += len(shown)
            if remaining != NO_LIMIT and shared.remaining.value <= 0:
                shared.stop.set()
                return False
        return True


def read_in_processes(
    bootstrap: str,
    groups: list[dict[Partition, PartitionPlan]],
    render: RenderOptions,
    options: ReadOptions,
    out: BinaryIO,
) -> ReadStats:
    context: ForkContext = multiprocessing.get_context("fork")
    shared = _Shared(
        lock=context.Lock(),
        remaining=context.Value("q", options.count if options.count is not None else NO_LIMIT, lock=False),
        stop=context.Event(),
        results=context.Queue(),
    )
    out.flush()
    started = time.perf_counter()
    workers = [
        context.Process(
            target=_worker,
            args=(bootstrap, group, render, options, shared, out.fileno()),
            name=f"p95-tap-{index}",
            daemon=True,
        )
        for index, group in enumerate(groups)
    ]
    for worker in workers:
        worker.start()
    stats = ReadStats(jobs=len(workers))
    errors: list[str] = []
    try:
        for _ in workers:
            read_count, shown, client, error = shared.results.get()
            stats.read += read_count
            stats.shown += shown
            stats.client = stats.client or client
            if error:
                errors.append(error)
                shared.stop.set()
    except KeyboardInterrupt:
        shared.stop.set()
        raise
    finally:
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.terminate()
                worker.join()
        stats.seconds = time.perf_counter() - started
    if errors:
        raise RuntimeError(errors[0])
    return stats


def _worker(
    bootstrap: str,
    partitions: dict[Partition, PartitionPlan],
    render: RenderOptions,
    options: ReadOptions,
    shared: _Shared,
    out_fd: int,
) -> None:
    # Ctrl-C reaches every process of the group: the parent decides, the workers see `stop`.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    output = SharedOutput(shared, os.fdopen(out_fd, "wb", closefd=False))
    stats = ReadStats()
    error = ""

    def should_stop() -> bool:  # asked once per poll; an orphan (parent killed) stops too
        return shared.stop.is_set() or os.getppid() != parent

    try:
        stats = read_partitions(bootstrap, partitions, Renderer(render), options, output, should_stop=should_stop)
    except Exception as failure:
        error = f"{type(failure).__name__}: {failure}"
        with contextlib.suppress(Exception):
            traceback.print_exc()
    shared.results.put((stats.read, output.shown, stats.client, error))
