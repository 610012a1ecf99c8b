"""Broker CPU per ListOffsets and per fetch on a Tansu partition of N one-record batches.

    python benchmarks/end_offset_costs.py 100000

Starts its own broker, fills one partition with N one-record batches, then times (broker CPU per
call, the broker's own process CPU) 50 ListOffsets(latest), 50 ListOffsets(earliest) and 50 fetches
at offsets 0, N/2, N-1 and N (the end: nothing to return).
"""

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from phoenix95.bench.offsets_probe import cpu_seconds, fill
from phoenix95.connectors.kafka_admin import ensure_topics
from phoenix95.stack.processes import stop
from phoenix95.stack.services import start_broker

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000


async def main(url, pid):
    await ensure_topics(url, ["t"], partitions=1)
    import psutil

    rss = psutil.Process(pid).memory_info().rss
    fill(url, "t", 1, N)
    grown = psutil.Process(pid).memory_info().rss - rss
    print(f"broker RSS grew {grown / 2**20:.1f} MiB for {N} one-record batches ({grown / N:.0f} bytes a batch)")
    tp = TopicPartition("t", 0)
    c = AIOKafkaConsumer(
        bootstrap_servers=url,
        enable_auto_commit=False,
        fetch_max_wait_ms=10,
        max_partition_fetch_bytes=1024,
        auto_offset_reset="earliest",
    )
    await c.start()
    print("end", await c.end_offsets([tp]))
    k = 50
    b = cpu_seconds(pid)
    t = time.perf_counter()
    for _ in range(k):
        await c.end_offsets([tp])
    print(
        f"ListOffsets latest: {(cpu_seconds(pid) - b) / k * 1000:.2f} ms broker CPU/call, {(time.perf_counter() - t) / k * 1000:.1f} ms wall"
    )
    b = cpu_seconds(pid)
    for _ in range(k):
        await c.beginning_offsets([tp])
    print(f"ListOffsets earliest: {(cpu_seconds(pid) - b) / k * 1000:.2f} ms")
    c.assign([tp])
    for where in (0, N // 2, N - 1, N):
        b = cpu_seconds(pid)
        t = time.perf_counter()
        for _ in range(k):
            before = c.last_poll_timestamp(tp)
            c.seek(tp, where)
            while True:
                await c.getmany(tp, timeout_ms=5)
                if c.last_poll_timestamp(tp) != before:
                    break
        print(
            f"fetch at {where}: {(cpu_seconds(pid) - b) / k * 1000:.2f} ms broker CPU/fetch, hw {c.highwater(tp)}, {(time.perf_counter() - t) / k * 1000:.1f} ms wall"
        )
    c.assign([])
    b = cpu_seconds(pid)
    time.sleep(3)
    print(f"idle {(cpu_seconds(pid) - b) / 3:.3f} cores")
    await c.stop()


d = Path(tempfile.mkdtemp())
br = start_broker(d, preferred_port=0)
try:
    asyncio.run(main(br.url, br.pid))
finally:
    stop(br.pid, expect=br.expect)
