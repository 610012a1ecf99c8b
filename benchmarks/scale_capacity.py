"""CPU per message of each stage, of PostgreSQL and of the broker: the inputs of the capacity model
in docs/scaling.md.

    python benchmarks/scale_capacity.py                    # 20,000 prices, then 1,000 signals
    python benchmarks/scale_capacity.py --prices 50000 --signals 3000

Starts the four stage workers (one instance each, wall clock, limits opened so that signals trade)
against a fresh Tansu broker, the local PostgreSQL and Redis (as the tests do). Three phases:

1. idle (no input) for `--idle` seconds: the CPU a worker burns polling and on its timers;
2. a backlog of `--prices` prices on ten symbols, drained: CPU per price of each stage (minus the
   idle rate over the same time);
3. a backlog of `--signals` signals, drained (every verdict executed, every position opened): CPU
   per signal of each stage (its analysis, verdict, order and position events).

Backlogs, not a paced feed: at live rates the idle polling dwarfs the work and the difference is noise.

CPU is user+system time (psutil) of each worker process, of the PostgreSQL backends connected to
the workers, and of the broker process. The machine is shared: the load average is printed with the
figures, which are an upper bound of what the code needs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import make_namespace
from tests.faults.test_scale_out import LiveFeed, wait_for_groups
from tests.services import discover_services

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


async def backlog(pipeline: Any, events: list[Any]) -> None:
    """Publish `events` at once (a backlog), then wait until every stage has committed its inputs
    up to their ends (the stages drained it, held verdicts filled)."""
    from phoenix95.streams.producer import EventProducer
    from phoenix95.streams.stages import STAGES

    producer = EventProducer(pipeline.settings.kafka.bootstrap_servers, pipeline.topics, pipeline.codec)
    await producer.start()
    try:
        for index in range(0, len(events), 2000):
            await producer.publish(events[index : index + 2000])
    finally:
        await producer.stop()
    await asyncio.sleep(2)
    while not await pipeline.caught_up(STAGES):
        await asyncio.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prices", type=int, default=20000, help="prices in the price backlog (10 symbols)")
    parser.add_argument("--signals", type=int, default=1000, help="signals in the signal backlog")
    parser.add_argument("--idle", type=float, default=20.0)
    args = parser.parse_args()

    from phoenix95.settings import get_settings
    from tests.pipeline import Pipeline

    work = Path(tempfile.mkdtemp(prefix="p95-capacity-"))
    services = discover_services(work / "services")
    namespace = make_namespace(services, work / "home", **OPEN_LIMITS)
    os.environ.update(namespace.env)
    get_settings.cache_clear()
    pipeline = Pipeline(namespace)
    pipeline.start()
    try:
        wait_for_groups(namespace.home / "logs", pipeline.workers.names)
        workers = {name: psutil.Process(pipeline.workers.pid(name)) for name in pipeline.workers.names}
        pids = [p.pid for p in workers.values()]
        feed = LiveFeed(namespace.name, args.signals)

        def sample() -> dict[str, float]:
            backends = peers(pids, port_of(services.postgres))
            brokers = peers(pids, port_of(services.kafka))
            return {
                **{name: cpu(p) for name, p in workers.items()},
                "postgres": sum(cpu(p) for p in backends),
                "broker": sum(cpu(p) for p in brokers),
                "at": time.monotonic(),
            }

        def prices(count: int) -> list[Any]:
            start = datetime.now(UTC) - timedelta(seconds=count / 100)
            return [e for step in range(count // 10) for e in feed.tick(start + timedelta(seconds=step / 10))]

        # the connections (pools) exist once a first batch ran: warm up with a small backlog
        asyncio.run(backlog(pipeline, prices(500)))
        time.sleep(3)
        first = sample()
        time.sleep(args.idle)
        idle = sample()
        price_events = prices(args.prices)
        asyncio.run(backlog(pipeline, price_events))
        after_prices = sample()
        now = datetime.now(UTC)
        signal_events = [feed.signal(now) for _ in range(args.signals)]
        asyncio.run(backlog(pipeline, signal_events))
        after_signals = sample()
    finally:
        pipeline.stop()
        services.close()
    load = os.getloadavg()
    keys = [*workers, "postgres", "broker"]
    idle_s = idle["at"] - first["at"]
    report: dict[str, Any] = {
        "load_average": [round(x, 1) for x in load],
        "prices": len(price_events),
        "signals": len(signal_events),
        "price_backlog_s": round(after_prices["at"] - idle["at"], 1),
        "signal_backlog_s": round(after_signals["at"] - after_prices["at"], 1),
    }
    for key in keys:
        idle_rate = (idle[key] - first[key]) / idle_s
        spent_prices = after_prices[key] - idle[key] - idle_rate * (after_prices["at"] - idle["at"])
        spent_signals = after_signals[key] - after_prices[key] - idle_rate * (after_signals["at"] - after_prices["at"])
        report[key] = {
            "idle_cpu_share": round(idle_rate, 3),
            "cpu_us_per_price": round(spent_prices / len(price_events) * 1e6),
            "cpu_us_per_signal": round(spent_signals / len(signal_events) * 1e6),
        }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
