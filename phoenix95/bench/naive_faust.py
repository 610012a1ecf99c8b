"""The baseline: a naive Faust pipeline of the same shape as Phoenix95 — four agents over five topics,
one message at a time, JSON values, a `topic.send()` and a one-row INSERT per message in every stage.
(It gets the same transport fixes — fetch wait, session timeout — so only the processing differs.)

    python -m phoenix95.bench.naive_faust BOOTSTRAP NAMESPACE POSTGRES_URL SCHEMA
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

STAGES = (("signals", "analysis"), ("analysis", "verdicts"), ("verdicts", "orders"), ("orders", "ticks"))


def create_app(bootstrap: str, namespace: str, postgres_url: str, schema: str) -> Any:
    import psycopg

    from phoenix95.streams.transport import TunedApp

    app = TunedApp(
        f"{namespace}-naive",
        broker=f"kafka://{bootstrap}",
        value_serializer="raw",
        key_serializer="raw",
        topic_partitions=4,
        web_enabled=False,
        broker_session_timeout=6,
        broker_heartbeat_interval=1,
        consumer_auto_offset_reset="earliest",
        datadir=f"/tmp/{namespace}-naive",
    )
    app.p95_fetch_max_wait_ms = 10
    topics = {
        name: app.topic(f"{namespace}.{name}", value_type=bytes, key_type=bytes)
        for name in ("signals", "analysis", "verdicts", "orders", "ticks")
    }
    connection: dict[str, Any] = {}

    async def conn() -> Any:
        if "c" not in connection:
            connection["c"] = await psycopg.AsyncConnection.connect(postgres_url, autocommit=True)
            await connection["c"].execute(f'SET search_path TO "{schema}"')
        return connection["c"]

    def make(source: str, target: str) -> None:
        @app.agent(topics[source], name=f"naive-{source}")
        async def stage(stream: Any) -> None:
            db = await conn()
            async for event in stream.events():
                value = json.loads(event.value)
                value[target] = min(float(value.get("confidence", 0.5)) * 1.3, 1.0)
                await topics[target].send(key=event.key, value=json.dumps(value).encode())
                await db.execute(
                    "INSERT INTO naive_events (stage, id) VALUES (%s, %s) ON CONFLICT DO NOTHING", (target, value["id"])
                )

    for source, target in STAGES:
        make(source, target)
    return app


async def prepare(postgres_url: str, schema: str, bootstrap: str, namespace: str) -> None:
    import psycopg

    from phoenix95.connectors.kafka_admin import ensure_topics

    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as connection:
        await connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await connection.execute(
            f'CREATE TABLE IF NOT EXISTS "{schema}".naive_events (stage TEXT, id TEXT, PRIMARY KEY (stage, id))'
        )
    await ensure_topics(
        bootstrap, [f"{namespace}.{n}" for n in ("signals", "analysis", "verdicts", "orders", "ticks")], partitions=4
    )


async def _count(postgres_url: str, schema: str) -> int:
    import psycopg

    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as connection:
        cursor = await connection.execute(f"SELECT COUNT(*) FROM \"{schema}\".naive_events WHERE stage = 'ticks'")
        row = await cursor.fetchone()
        return int(row[0]) if row else 0


async def _publish(bootstrap: str, topic: str, count: int, offset: int = 0) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic,
                json.dumps(
                    {
                        "id": f"s{offset + i}",
                        "symbol": "BTCUSDT",
                        "action": "buy",
                        "price": "60000",
                        "confidence": "0.8",
                    }
                ).encode(),
                key=b"BTCUSDT" if i % 2 else b"ETHUSDT",
            )
            for i in range(count)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def measure(bootstrap: str, postgres_url: str, *, signals: int, timeout: float = 900.0) -> dict[str, Any]:
    from phoenix95.storage.postgres import drop_schema

    namespace = "naive" + uuid.uuid4().hex[:6]
    schema = namespace
    await prepare(postgres_url, schema, bootstrap, namespace)
    process = subprocess.Popen(
        [sys.executable, "-m", "phoenix95.bench.naive_faust", bootstrap, namespace, postgres_url, schema],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    try:
        await _publish(bootstrap, f"{namespace}.signals", 1)  # warm-up: the worker has joined when it comes out
        deadline = time.monotonic() + 180
        while await _count(postgres_url, schema) < 1:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the naive Faust baseline did not start")
            await asyncio.sleep(0.2)
        started = time.perf_counter()
        await _publish(bootstrap, f"{namespace}.signals", signals, offset=1)
        deadline = time.monotonic() + timeout
        while await _count(postgres_url, schema) < signals + 1:
            if time.monotonic() > deadline:
                raise TimeoutError("the naive Faust baseline did not finish")
            await asyncio.sleep(0.2)
        elapsed = time.perf_counter() - started
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        await drop_schema(postgres_url, schema)
        from phoenix95.connectors.kafka_admin import delete_topics

        await delete_topics(
            bootstrap, [f"{namespace}.{n}" for n in ("signals", "analysis", "verdicts", "orders", "ticks")]
        )
    return {"signals_per_s": round(signals / elapsed, 1), "signals": signals, "elapsed_s": round(elapsed, 2)}


def main() -> None:
    import faust

    bootstrap, namespace, postgres_url, schema = sys.argv[1:5]
    app = create_app(bootstrap, namespace, postgres_url, schema)
    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
