"""The end-offset probe (#21): broker CPU of the idle stage workers, by topic size.

    python -m phoenix95.bench.offsets_probe --batches 100000 --seconds 30 \\
        --tree before=/path/to/old/checkout --tree after=.  --out docs/perf-runs/offsets-probe.json

A broker of its own (so its CPU is the workers' doing alone) holds two namespaces: one whose price
topic has `--batches` one-record batches per partition, and one left empty. Each stage group's offsets
are committed at the end of its inputs, so the workers start idle (nothing to read). Then, for each
code tree given (`--tree NAME=PATH`, put first on PYTHONPATH of the workers) and each namespace,
alternating, the four stage workers run as `p95 worker` runs them (each with its /metrics port, so each
samples its own lag; the risk worker also the signal path's), and after they joined and settled,
the broker's CPU (and each worker's) is measured over `--seconds`. The probe reports cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fill(bootstrap: str, topic: str, partitions: int, batches: int) -> float:
    """`batches` one-record batches per partition (confluent-kafka with one message per batch)."""
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "batch.num.messages": 1,
            "linger.ms": 0,
            "enable.idempotence": False,
            "acks": 1,
            "queue.buffering.max.messages": 200_000,
        }
    )
    started = time.perf_counter()
    value = b'{"probe": 1}'
    for index in range(batches):
        for partition in range(partitions):
            while True:
                try:
                    producer.produce(topic, value, partition=partition)
                    break
                except BufferError:
                    producer.poll(0.05)
        if index % 1000 == 0:
            producer.poll(0)
    producer.flush(300)
    return time.perf_counter() - started


async def commit_at_end(bootstrap: str, group: str, topics: list[str]) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.structs import OffsetAndMetadata

    from phoenix95.connectors.kafka_admin import end_offsets

    ends = await asyncio.wait_for(end_offsets(bootstrap, topics, exact=False), 120)  # one-record batches: exact
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(ends))
        await consumer.commit(
            {TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(end, "") for tp, end in ends.items()}
        )
    finally:
        await consumer.stop()


SYMBOLS = (
    "BTCUSDT",
    "ETHUSDT",
    "SOLUSDT",
    "XRPUSDT",
    "BNBUSDT",
    "ADAUSDT",
    "DOGEUSDT",
    "AVAXUSDT",
    "LINKUSDT",
    "DOTUSDT",
)


async def publish_prices(env: dict[str, str]) -> None:
    from datetime import UTC, datetime
    from decimal import Decimal

    from phoenix95.connectors.market_data import price_event
    from phoenix95.schemas.codec import Codec
    from phoenix95.schemas.topics import Topics
    from phoenix95.settings import Settings
    from phoenix95.streams.producer import EventProducer

    settings = Settings()
    namespace = env["P95_NAMESPACE"]
    producer = EventProducer(env["P95_KAFKA__BOOTSTRAP_SERVERS"], Topics(namespace), Codec.for_settings(settings))
    await producer.start()
    try:
        now = datetime.now(UTC)
        await producer.publish(
            [
                price_event(symbol=s, time=now, price=Decimal("100"), source="probe", namespace=namespace)
                for s in SYMBOLS
            ]
        )
    finally:
        await producer.stop()


def cpu_seconds(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def measure(
    env: dict[str, str], tree: str, log_dir: Path, *, seconds: float, settle: float, broker_pid: int
) -> dict[str, Any]:
    from phoenix95.streams.stages import STAGES
    from phoenix95.streams.supervisor import WorkerSet

    run_env = {**env, "PYTHONPATH": os.pathsep.join(p for p in (tree, env.get("PYTHONPATH", "")) if p)}
    workers = WorkerSet(
        STAGES, env=run_env, log_dir=log_dir, web_ports={s: _free_port() for s in STAGES}, log_level="info"
    )
    workers.start()
    try:
        deadline = time.monotonic() + 180
        logs = {s: log_dir / f"worker-{s}.log" for s in STAGES}
        while time.monotonic() < deadline:
            joined = all(p.exists() and "consuming" in p.read_text(errors="replace") for p in logs.values())
            if joined:
                break
            if any(not workers.alive(s) for s in STAGES):
                raise RuntimeError(f"a worker exited; see {log_dir}")
            time.sleep(1)
        # a price for each of ten symbols: the workers have read something (a live worker has), so
        # their broker-loss check looks at those partitions
        asyncio.run(publish_prices(env))
        time.sleep(settle)
        pids = {s: workers.pid(s) for s in STAGES}
        broker_before = cpu_seconds(broker_pid)
        workers_before = {s: cpu_seconds(p) for s, p in pids.items()}
        started = time.perf_counter()
        time.sleep(seconds)
        elapsed = time.perf_counter() - started
        broker_cores = (cpu_seconds(broker_pid) - broker_before) / elapsed
        worker_cores = {s: round((cpu_seconds(p) - workers_before[s]) / elapsed, 3) for s, p in pids.items()}
    finally:
        workers.stop()
    return {
        "broker_cores": round(broker_cores, 3),
        "worker_cores": worker_cores,
        "seconds": round(elapsed, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=100_000, help="one-record batches per partition")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=15.0, help="seconds after the workers joined")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tree", action="append", default=[], help="NAME=PATH of a source tree (repeatable)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    trees = dict(item.split("=", 1) for item in args.tree) or {"this": str(Path(__file__).resolve().parents[2])}
    trees = {name: str(Path(path).resolve()) for name, path in trees.items()}

    from phoenix95.schemas.topics import Topics
    from phoenix95.settings import get_settings
    from phoenix95.stack.processes import stop
    from phoenix95.stack.services import start_broker
    from phoenix95.streams import stages as registry

    base = get_settings()
    workdir = Path(tempfile.mkdtemp(prefix="p95-offsets-probe-"))
    broker = start_broker(workdir, preferred_port=0)
    assert broker.url and broker.pid, "the broker did not start"
    url, broker_pid = broker.url, broker.pid
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    results: dict[str, Any] = {
        "batches_per_partition": args.batches,
        "partitions": args.partitions,
        "trees": trees,
        "cores": os.cpu_count(),
        "runs": [],
    }
    try:
        namespaces = {"big": "probe" + uuid.uuid4().hex[:6], "empty": "probe" + uuid.uuid4().hex[:6]}
        envs = {}
        for size, namespace in namespaces.items():
            env: dict[str, str] = {
                **os.environ,
                "P95_HOME": str(workdir / namespace),
                "P95_NAMESPACE": namespace,
                "P95_KAFKA__BOOTSTRAP_SERVERS": url,
                "P95_KAFKA__PARTITIONS": str(args.partitions),
                "P95_POSTGRES__URL": base.postgres_url(),
                "P95_POSTGRES__DB_SCHEMA": namespace,
                "P95_REDIS__URL": base.redis_url(),
                "P95_REDIS__PREFIX": f"{namespace}:s4:",
                "P95_INFLUX__ENABLED": "false",
                "P95_RISK__CLOCK": "wall",
            }
            envs[size] = env
            os.environ.update({k: v for k, v in env.items() if k.startswith("P95_")})
            get_settings.cache_clear()
            from phoenix95.streams.wiring import prepare

            prepare(get_settings())
            topics = Topics(namespace)
            if size == "big":
                say(
                    f"filling {topics.market_prices}: {args.batches:,} one-record batches x {args.partitions} partitions"
                )
                results["fill_s"] = round(fill(url, topics.market_prices, args.partitions, args.batches), 1)
            for stage in registry.STAGES:
                asyncio.run(
                    commit_at_end(
                        broker.url, topics.group(stage), [topics.name(t) for t in registry.spec(stage).inputs]
                    )
                )
        broker_idle_before = cpu_seconds(broker_pid)
        time.sleep(5)
        results["broker_alone_cores"] = round((cpu_seconds(broker_pid) - broker_idle_before) / 5, 3)
        for round_index in range(args.rounds):
            for size in ("big", "empty"):
                for name, tree in trees.items():
                    os.environ.update({k: v for k, v in envs[size].items() if k.startswith("P95_")})
                    say(f"round {round_index + 1}: {name} code, {size} topics ...")
                    figure = measure(
                        envs[size],
                        tree,
                        workdir / f"logs-{round_index}-{size}-{name}",
                        seconds=args.seconds,
                        settle=args.settle,
                        broker_pid=broker_pid,
                    )
                    figure.update(round=round_index + 1, tree=name, topics=size)
                    say(f"  broker {figure['broker_cores']} cores; workers {figure['worker_cores']}")
                    results["runs"].append(figure)
                    if args.out:  # what is measured so far survives a failure later on
                        args.out.write_text(json.dumps(results, indent=2))
    finally:
        stop(broker.pid, expect=broker.expect)
    summary: dict[str, Any] = {}
    for run in results["runs"]:
        summary.setdefault(f"{run['tree']}/{run['topics']}", []).append(run["broker_cores"])
    results["broker_cores"] = summary
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
