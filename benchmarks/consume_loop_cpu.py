"""CPU per price of the execution stage as its worker's loop runs it, in this process: Faust's events
stood in for (a message with topic, partition, offset, key, value, headers; an `ack` that counts), then
`StageRunner.run_batch` as the agent calls it (records, process, write through the real sink, produce
to a capture, ack in order), with the worker's Prometheus metrics, and its heap frozen after the start
as the worker does (`streams/app.freeze_startup_heap`, when the code has it). What this leaves out is
Faust's and aiokafka's own per-message cost.

    python benchmarks/consume_loop_cpu.py                       # 20,000 prices, batches of 10 and 2,000
    python benchmarks/consume_loop_cpu.py --prices 40000 --batches 10,500,2000 --repeat 3

Prices of the ten symbols 1 ms apart per symbol (`--step-ms`), on 4 partitions. CPU is
`time.process_time()` of this process (the machine's load does not count); the best of `--repeat`
runs per batch size is reported, with every run. `py-spy record --format raw -o F -- python
benchmarks/consume_loop_cpu.py` gives its flame graph (`phoenix95.bench.profile.flame_svg`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from stage_cpu import OPEN_LIMITS, Capture

from tests.faults.test_scale_out import LiveFeed

PARTITIONS = 4


@dataclass
class _Message:
    topic: str
    partition: int
    offset: int
    timestamp: float
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class _Event:
    message: _Message


class _Acks:
    def __init__(self) -> None:
        self.count = 0

    async def __call__(self, event: Any) -> bool:
        self.count += 1
        return True


def events(codec: Any, topic: str, prices: list[Any], offsets: dict[int, int]) -> list[_Event]:
    from phoenix95.streams.producer import key_of

    made = []
    for index, price in enumerate(prices):
        partition = index % PARTITIONS
        offset = offsets.get(partition, 0)
        offsets[partition] = offset + 1
        made.append(_Event(_Message(topic, partition, offset, time.time(), key_of(price), codec.encode(price))))
    return made


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    from phoenix95.agents.base import StageRunner
    from phoenix95.schemas import topics
    from phoenix95.schemas.codec import Codec
    from phoenix95.schemas.topics import Topics
    from phoenix95.settings import get_settings
    from phoenix95.storage.postgres import Database, drop_schema, migrate
    from phoenix95.storage.redis_state import RedisState
    from phoenix95.storage.sink import StoreSink
    from phoenix95.streams import app as stage_app
    from phoenix95.streams.metrics import PipelineMetrics, TimedSink
    from phoenix95.streams.wiring import build_stage

    settings = get_settings()
    url = settings.postgres_url()
    schema = settings.postgres.db_schema
    await migrate(url, schema)
    database = Database(url, schema=schema, min_size=2, max_size=2)
    await database.open()
    redis = RedisState.from_url(settings.redis_url(), prefix=settings.redis.prefix)
    codec = Codec.for_settings(settings)
    codec.prepare()
    feed = LiveFeed(settings.namespace, 0)
    topic = Topics(settings.namespace).name(topics.MARKET_PRICES)
    clock = datetime.now(UTC) - timedelta(hours=1)
    every = timedelta(milliseconds=args.step_ms)
    report: dict[str, Any] = {
        "stage": "execution",
        "prices": args.prices,
        "step_ms": args.step_ms,
        "heap_frozen": hasattr(stage_app, "freeze_startup_heap") and not args.no_freeze,
        "batches": {},
    }
    try:
        for size in [int(s) for s in args.batches.split(",")]:
            runs = []
            for _ in range(args.repeat):
                stage = build_stage("execution", settings, codec, database)
                await stage.start()
                metrics = PipelineMetrics("execution", clock=settings.risk.clock)
                sink = TimedSink(StoreSink(database, redis, None, audit=settings.compliance.audit_enabled), metrics)
                runner = StageRunner(stage, sink, Capture(codec), metrics=metrics)
                freeze = getattr(stage_app, "freeze_startup_heap", None)
                if freeze is not None and not args.no_freeze:
                    freeze()
                steps = args.prices // 10
                prices = [e for step in range(steps) for e in feed.tick(clock + every * (step + 1))]
                clock += every * steps + timedelta(seconds=1)
                batch = events(codec, topic, prices, {})
                acks = _Acks()
                started = time.process_time()
                for index in range(0, len(batch), size):
                    await runner.run_batch(batch[index : index + size], acks)
                spent = time.process_time() - started
                assert acks.count == len(batch), (acks.count, len(batch))
                runs.append(round(spent / len(batch) * 1e6, 2))
                await stage.stop()
            report["batches"][f"batch_{size}"] = {"cpu_us_per_price": min(runs), "runs": runs}
    finally:
        await redis.close()
        await database.close()
        await drop_schema(url, schema)
    report["load_average"] = [round(x, 1) for x in os.getloadavg()]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prices", type=int, default=20000, help="prices per run")
    parser.add_argument("--batches", default="10,2000", help="batch sizes, comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="runs per batch size (the best is reported)")
    parser.add_argument("--step-ms", type=float, default=1.0, help="event time between a symbol's prices")
    parser.add_argument(
        "--no-freeze", action="store_true", help="leave the heap unfrozen (to see what freezing it gives)"
    )
    args = parser.parse_args()
    name = "loop" + uuid.uuid4().hex[:8]
    os.environ.update(
        {
            "P95_NAMESPACE": name,
            "P95_POSTGRES__URL": os.environ.get("P95_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
            "P95_POSTGRES__DB_SCHEMA": name,
            "P95_REDIS__URL": os.environ.get("P95_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
            "P95_REDIS__PREFIX": f"{name}:s4:",
            "P95_INFLUX__ENABLED": "false",
            "P95_HOME": f"/tmp/{name}",
            **OPEN_LIMITS,
        }
    )
    print(json.dumps(asyncio.run(measure(args)), indent=1))


if __name__ == "__main__":
    main()
