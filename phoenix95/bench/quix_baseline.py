"""The other baseline: the same flow (four stages over five topics, JSON) in Quix Streams, on the same
broker. No sinks: it measures the stream processor alone (Quix is a benchmark-only extra:
`pip install 'phoenix95[bench]'`).

    python -m phoenix95.bench.quix_baseline BOOTSTRAP NAMESPACE
    python -m phoenix95.bench.quix_baseline --consume BOOTSTRAP TOPIC MESSAGES   # price_throughput's

The second form is `price_throughput`'s baseline: one consumer of a topic doing no work (raw bytes, no
deserialising), printing messages a second from its first message to the `MESSAGES`th as JSON.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import time
import uuid
from typing import Any

from phoenix95.bench.naive_faust import _publish

TOPICS = ("signals", "analysis", "verdicts", "orders", "ticks")


def available() -> bool:
    return missing() is None


def missing() -> str | None:
    """Why the Quix Streams baseline cannot run here (None: it can)."""
    if os.environ.get("P95_BENCH_NO_QUIX"):
        return "disabled by P95_BENCH_NO_QUIX"
    try:
        import quixstreams  # noqa: F401
    except ImportError:
        return "quixstreams is not installed (pip install 'phoenix95[bench]')"
    return None


def run_app(bootstrap: str, namespace: str) -> None:
    from quixstreams import Application

    app = Application(
        broker_address=bootstrap,
        consumer_group=f"{namespace}-quix",
        auto_offset_reset="earliest",
        producer_extra_config={"enable.idempotence": False, "linger.ms": 5},
        # Tansu holds a new group's first JoinGroup for half the session timeout (README): 6 s, as
        # our own workers use, instead of librdkafka's 45 s
        consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
        commit_interval=0.5,
    )
    topics = {
        name: app.topic(f"{namespace}.{name}", value_deserializer="json", value_serializer="json") for name in TOPICS
    }

    def stage(target: str) -> Any:
        def step(value: dict[str, Any]) -> dict[str, Any]:
            value[target] = min(float(value.get("confidence", 0.5)) * 1.3, 1.0)
            return value

        return step

    for source, target in itertools.pairwise(TOPICS):
        app.dataframe(topics[source]).apply(stage(target)).to_topic(topics[target])
    app.run()


async def measure(bootstrap: str, *, signals: int, timeout: float = 600.0) -> dict[str, Any]:
    from phoenix95.connectors.kafka_admin import delete_topics, ensure_topics, message_counts

    namespace = "quix" + uuid.uuid4().hex[:6]
    names = [f"{namespace}.{n}" for n in TOPICS]
    await ensure_topics(bootstrap, names, partitions=4)
    process = subprocess.Popen(
        [sys.executable, "-m", "phoenix95.bench.quix_baseline", bootstrap, namespace],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = f"{namespace}.ticks"
    try:
        await _publish(bootstrap, f"{namespace}.signals", 1)
        deadline = time.monotonic() + 180
        while (await message_counts(bootstrap, [last]))[last] < 1:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the Quix Streams baseline did not start")
            await asyncio.sleep(0.2)
        started = time.perf_counter()
        await _publish(bootstrap, f"{namespace}.signals", signals, offset=1)
        deadline = time.monotonic() + timeout
        while (await message_counts(bootstrap, [last]))[last] < signals + 1:
            if time.monotonic() > deadline:
                raise TimeoutError("the Quix Streams baseline did not finish")
            await asyncio.sleep(0.2)
        elapsed = time.perf_counter() - started
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        await delete_topics(bootstrap, names)
    return {
        "signals_per_s": round(signals / elapsed, 1),
        "signals": signals,
        "elapsed_s": round(elapsed, 2),
        "sinks": "none",
    }


def consume(bootstrap: str, topic: str, messages: int) -> None:
    import json

    from quixstreams import Application

    app = Application(
        broker_address=bootstrap,
        consumer_group=f"quix-passthrough-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
        commit_interval=0.5,
    )
    seen = {"count": 0, "first": 0.0}

    def count(_value: Any) -> None:
        if seen["count"] == 0:
            seen["first"] = time.perf_counter()
        seen["count"] += 1
        if seen["count"] == messages:
            elapsed = time.perf_counter() - seen["first"]
            print(
                json.dumps(
                    {
                        "prices_per_s": round(messages / elapsed, 1) if elapsed else None,
                        "messages": messages,
                        "elapsed_s": round(elapsed, 2),
                        "work": "none (raw bytes)",
                    }
                ),
                flush=True,
            )
            app.stop()

    app.dataframe(app.topic(topic, value_deserializer="bytes")).update(count)
    app.run()


if __name__ == "__main__":
    if sys.argv[1] == "--consume":
        consume(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        run_app(sys.argv[1], sys.argv[2])
