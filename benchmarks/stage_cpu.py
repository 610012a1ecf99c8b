"""CPU per message of each stage's own work, in this process, without Faust: the stage code
(decode, decide, encode its outputs) and its writes through the real sink (PostgreSQL and Redis
clients), and the CPU of the PostgreSQL backend serving it. The inputs of the capacity model in
docs/scaling.md (benchmarks/capacity_model.py).

    python benchmarks/stage_cpu.py                    # 20,000 prices on 10 symbols, 1,000 signals
    python benchmarks/stage_cpu.py --prices 50000 --signals 3000

Each stage runs as its worker runs it (`StageRunner`: process, write, publish), fed batches of 500
encoded records; what it publishes is encoded and kept, and feeds the next stage: signals ->
analysis -> risk -> execution -> positions. CPU is `time.process_time()` of this process (user +
system, so the machine's load does not count) and psutil's CPU time of the PostgreSQL backends
connected to it. Not included: Faust's and aiokafka's per-message cost of consuming and producing,
which NOTES.md measured (11,600 msg/s for one raw-bytes stage in batches, ~86 us a message, on
the same kind of machine), and the broker's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.faults.test_scale_out import LiveFeed

OPEN_LIMITS = {
    "P95_RISK__CLOCK": "wall",
    "P95_RISK__MAX_OPEN_POSITIONS": "1000000",
    "P95_RISK__MAX_POSITION_FRACTION": "0.0005",
    "P95_RISK__MAX_ORDERS_PER_MINUTE": "1000000",
    "P95_RISK__DUPLICATE_WINDOW_S": "0",
    "P95_RISK__MAX_EXPOSURE_PER_SYMBOL": "100000000",
    "P95_RISK__MAX_PIPELINE_LAG_S": "3600",
}


def cpu(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def peers(worker_pids: list[int], port: int) -> list[psutil.Process]:
    """Processes at the other end of the workers' TCP connections to `port` (PostgreSQL backends;
    or the broker, which is one process)."""
    local_ports = set()
    for connection in psutil.net_connections(kind="tcp"):
        if connection.pid in worker_pids and connection.raddr and connection.raddr.port == port:
            local_ports.add(connection.laddr.port)
    found = {}
    for connection in psutil.net_connections(kind="tcp"):
        if (
            connection.laddr.port == port
            and connection.raddr
            and connection.raddr.port in local_ports
            and connection.pid
        ):
            found[connection.pid] = psutil.Process(connection.pid)
    return list(found.values())


BATCH = 500


class Capture:
    """A publisher that encodes what a stage produces (as the producer would) and keeps it."""

    def __init__(self, codec: Any):
        self.codec = codec
        self.events: list[Any] = []

    async def publish(self, events: Any, *, dead_letter_keys: Any = ()) -> None:
        for event in events:
            self.codec.encode(event)
        self.events.extend(events)


def records(codec: Any, topic: str, events: list[Any]) -> list[Any]:
    from phoenix95.agents.ports import InputRecord
    from phoenix95.schemas.topics import Topics
    from phoenix95.settings import get_settings
    from phoenix95.streams.producer import key_of

    name = Topics(get_settings().namespace).name(topic)  # the stages know their inputs by these names
    return [
        InputRecord(name, 0, offset, None, key_of(event), codec.encode(event)) for offset, event in enumerate(events)
    ]


async def drive(runner: Any, batch: list[Any], size: int = BATCH) -> None:
    for index in range(0, len(batch), size):
        part = batch[index : index + size]
        outcomes = await runner._process_guarded(part)
        await runner.commit(outcomes)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    from phoenix95.agents.base import StageRunner
    from phoenix95.schemas import topics
    from phoenix95.schemas.codec import Codec
    from phoenix95.schemas.messages import Analysis, Order, RiskVerdict
    from phoenix95.settings import get_settings
    from phoenix95.storage.outbox import PgOutbox
    from phoenix95.storage.postgres import Database, drop_schema, migrate
    from phoenix95.storage.redis_state import RedisState
    from phoenix95.storage.sink import StoreSink
    from phoenix95.streams.wiring import build_stage

    settings = get_settings()
    url = settings.postgres_url()
    schema = settings.postgres.db_schema
    await migrate(url, schema)
    database = Database(url, schema=schema, min_size=2, max_size=2)  # every backend known from the start
    await database.open()
    redis = RedisState.from_url(settings.redis_url(), prefix=settings.redis.prefix)
    codec = Codec.for_settings(settings)
    codec.prepare()
    feed = LiveFeed(settings.namespace, args.signals)
    start = datetime.now(UTC) - timedelta(seconds=args.prices / 100 + 60)
    prices = [e for step in range(args.prices // 10) for e in feed.tick(start + timedelta(seconds=step / 10))]
    now = datetime.now(UTC)
    signals = [feed.signal(now) for _ in range(args.signals)]
    report: dict[str, Any] = {"prices": len(prices), "signals": len(signals)}
    backend_cpu = 0.0
    stages: dict[str, Any] = {}
    try:
        for name in ("analysis", "risk", "execution", "positions"):
            stage = build_stage(name, settings, codec, database)
            await stage.start()
            capture = Capture(codec)
            outbox = PgOutbox(database, codec) if stage.uses_outbox else None
            runner = StageRunner(stage, StoreSink(database, redis, None), capture, outbox=outbox)
            stages[name] = (runner, capture)
        await database.fetch("SELECT 1")
        backends = peers([os.getpid()], int(url.rsplit(":", 1)[1].split("/")[0]))

        async def timed(name: str, batch: list[Any], size: int = BATCH) -> tuple[float, float]:
            started, pg = time.process_time(), sum(cpu(p) for p in backends)
            await drive(stages[name][0], batch, size)
            return time.process_time() - started, sum(cpu(p) for p in backends) - pg

        price_records = records(codec, topics.MARKET_PRICES, prices)
        for name in ("risk", "execution", "positions"):
            spent, pg = await timed(name, price_records)
            report.setdefault(name, {})["cpu_us_per_price"] = round(spent / len(prices) * 1e6, 1)
            backend_cpu += pg
        report["postgres"] = {"cpu_us_per_price": round(backend_cpu / len(prices) * 1e6, 1)}
        # signals through the chain: each stage is fed what the one before it produced
        inputs = records(codec, topics.SIGNALS, signals)
        pg_signal = 0.0
        following = {"analysis": Analysis, "risk": RiskVerdict, "execution": Order, "positions": None}
        topic_of = {Analysis: topics.ANALYSIS, RiskVerdict: topics.RISK_VERDICTS, Order: topics.ORDERS}
        for name, kind in following.items():
            if name == "execution":  # the orders fill at the next price after the decisions
                closing = feed.tick(datetime.now(UTC) + timedelta(seconds=1))
                inputs = inputs + records(codec, topics.MARKET_PRICES, closing)
            spent, pg = await timed(name, inputs)
            pg_signal += pg
            produced = stages[name][1].events
            report.setdefault(name, {})["cpu_us_per_signal"] = round(spent / len(signals) * 1e6, 1)
            report[name]["outputs"] = len(produced)
            if kind is not None:
                inputs = records(codec, topic_of[kind], [e for e in produced if isinstance(e, kind)])
        report["postgres"]["cpu_us_per_signal"] = round(pg_signal / len(signals) * 1e6, 1)
        opened = (await database.fetch("SELECT COUNT(*) FROM positions WHERE status = 'open'"))[0][0]
        report["positions_opened"] = opened
        # prices again, now with the positions open and in batches of 10 (what a live feed gives a
        # worker): each price marks its symbol's open positions, each batch writes their state
        later = datetime.now(UTC) + timedelta(seconds=2)
        marks = [e for step in range(args.marks // 10) for e in feed.tick(later + timedelta(seconds=step / 10))]
        spent, pg = await timed("positions", records(codec, topics.MARKET_PRICES, marks), args.marks_batch)
        per_symbol = opened / 10
        report["positions"]["cpu_us_per_price_with_open"] = round(spent / len(marks) * 1e6, 1)
        report["postgres"]["cpu_us_per_price_with_open"] = round(pg / len(marks) * 1e6, 1)
        report["open_positions_per_symbol"] = per_symbol
        report["marks_batch"] = args.marks_batch
    finally:
        for runner, _ in stages.values():
            await runner.stage.stop()
        await redis.close()
        await database.close()
        await drop_schema(url, schema)
    report["load_average"] = [round(x, 1) for x in os.getloadavg()]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prices", type=int, default=20000)
    parser.add_argument("--signals", type=int, default=1000)
    parser.add_argument("--marks", type=int, default=2000, help="prices once the positions are open")
    parser.add_argument(
        "--marks-batch", type=int, default=10, help="batch size of those (10: a live feed; 2000: a backlog)"
    )
    args = parser.parse_args()
    name = "cpu" + uuid.uuid4().hex[:8]
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
            "P95_RISK__MAX_POSITION_FRACTION": "0.001",  # most signals trade (0.0005 sizes BTC to zero)
        }
    )
    print(json.dumps(asyncio.run(measure(args)), indent=1))


if __name__ == "__main__":
    main()
