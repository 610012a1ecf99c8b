"""Webhook acknowledgement latency at a fixed request rate, against a real broker and Redis.

    python benchmarks/webhook_bench.py --rate 500 --duration 12
    python benchmarks/webhook_bench.py --kafka 127.0.0.1:9092 --redis redis://127.0.0.1:6379/0

Starts a Tansu broker (unless --kafka is given) and `p95 serve` in its own process (uvloop and
httptools when installed), then sends valid, distinct, authenticated alerts open-loop: request i is
due at start + i/rate whether or not earlier answers came back, over a pool of keep-alive
connections. Latency is measured in this process from the moment a request was due (so queueing in
the client counts too) to the end of the answer; every 200 means the broker confirmed the write.
The source's rate limit is raised so every request takes the full path (the Redis script still runs).
Prints the figures and one JSON line; checks that the topic holds exactly one message per 200.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SECRET = "bench-" + uuid.uuid4().hex


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer

    async def post(self, path: str, body: bytes) -> int:
        self.writer.write(
            b"POST " + path.encode() + b" HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        if length:
            await self.reader.readexactly(length)
        return int(status_line.split()[1])


async def load(port: int, rate: float, duration: float, warmup: float, connections: int) -> dict[str, Any]:
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        pool.put_nowait(Connection(reader, writer))
    latencies: list[float] = []
    service: list[float] = []
    statuses: dict[int, int] = {}
    ok = 0
    total = int((warmup + duration) * rate)
    measured_from = int(warmup * rate)
    tasks = []

    async def one(index: int, due: float) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = json.dumps(
            {
                "passphrase": SECRET,
                "ticker": "BINANCE:BTCUSDT.P",
                "action": "buy" if index % 2 else "sell",
                "close": f"{65000 + index % 1000}.5",
                "interval": "5",
                "timenow": now,
                "signal_id": f"bench-{index}",
                "strategy": "bench",
            }
        ).encode()
        connection = await pool.get()
        sent = time.perf_counter()
        try:
            status = await connection.post("/webhook/signal", body)
        finally:
            pool.put_nowait(connection)
        done = time.perf_counter()
        if status == 200:
            nonlocal ok
            ok += 1
        if index >= measured_from:
            latencies.append(done - due)
            service.append(done - sent)
            statuses[status] = statuses.get(status, 0) + 1

    gc.collect()
    gc.freeze()  # keep the measuring loop free of long collections; the server is measured as it runs
    start = time.perf_counter() + 0.05
    for index in range(total):
        due = start + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, due)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - (start + warmup)
    while not pool.empty():
        pool.get_nowait().writer.close()
    ms = [value * 1000 for value in latencies]
    return {
        "requests": len(ms),
        "achieved_rate": round(len(ms) / elapsed, 1),
        "statuses": statuses,
        "p50_ms": round(percentile(ms, 0.50), 3),
        "p90_ms": round(percentile(ms, 0.90), 3),
        "p99_ms": round(percentile(ms, 0.99), 3),
        "p999_ms": round(percentile(ms, 0.999), 3),
        "max_ms": round(max(ms), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "service_p99_ms": round(percentile([v * 1000 for v in service], 0.99), 3),
        "ok_including_warmup": ok,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second (default 500)")
    parser.add_argument("--duration", type=float, default=12.0, help="measured seconds (default 12)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds sent before measuring (default 2)")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections (default 32)")
    parser.add_argument("--kafka", help="bootstrap servers of a running broker (default: start Tansu)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL (default local)")
    args = parser.parse_args()

    from phoenix95.stack import services
    from phoenix95.stack.processes import free_port, stop, wait_until

    workdir = Path(tempfile.mkdtemp(prefix="p95-webhook-bench-"))
    broker = None
    server = None
    namespace = "bench" + uuid.uuid4().hex[:8]
    try:
        if args.kafka:
            kafka = args.kafka
        else:
            broker = services.start_broker(workdir, preferred_port=0)
            kafka = broker.url
        assert kafka
        redis_url = args.redis
        if not services.redis_healthy(redis_url):
            print(f"Redis at {redis_url} does not answer; start one or pass --redis", file=sys.stderr)
            return 2
        port = free_port()
        env = {
            **os.environ,
            "P95_HOME": str(workdir),
            "P95_NAMESPACE": namespace,
            "P95_KAFKA__BOOTSTRAP_SERVERS": kafka,
            "P95_REDIS__URL": redis_url,
            "P95_REDIS__PREFIX": f"{namespace}:s4:",
            "P95_WEBHOOK__SECRETS": json.dumps({"tradingview": SECRET}),
            "P95_WEBHOOK__PORT": str(port),
            "P95_WEBHOOK__RATE_LIMIT_PER_MINUTE": str(10**9),
        }
        log = (workdir / "serve.log").open("wb")
        server = subprocess.Popen(
            [sys.executable, "-m", "phoenix95", "serve", "--log-level", "warning"], env=env, stdout=log, stderr=log
        )

        def healthy() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                return bool(response.status == 200)

        wait_until(healthy, timeout=30, what="webhook")
        result = _run(load(port, args.rate, args.duration, args.warmup, args.connections))
        result.update(_server_side(port))
        result.update(_published_check(kafka, namespace, int(result.pop("ok_including_warmup"))))
        result.update({"rate": args.rate, "duration_s": args.duration, "connections": args.connections})
        print(
            f"webhook ack latency at {args.rate:g} req/s for {args.duration:g} s ({result['requests']} requests, "
            f"{result['achieved_rate']}/s achieved, statuses {result['statuses']}):\n"
            f"  p50 {result['p50_ms']} ms  p90 {result['p90_ms']} ms  p99 {result['p99_ms']} ms  "
            f"p99.9 {result['p999_ms']} ms  max {result['max_ms']} ms  (service-time p99 {result['service_p99_ms']} ms)\n"
            f"  server-side, share answered within: {result.get('server_ack')}\n"
            f"  broker confirmation, share within:  {result.get('broker_confirm')}\n"
            f"  messages on the topic: {result['messages_on_topic']} (expected {result['expected_messages']})",
            file=sys.stderr,
        )
        print(json.dumps(result))
        return 0 if result["messages_on_topic"] == result["expected_messages"] else 1
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        if broker is not None:
            stop(broker.pid, expect=broker.expect)
        _clean_redis(args.redis, namespace)


def _server_side(port: int) -> dict[str, Any]:
    """From the server's own histograms (warm-up included): the share of published alerts answered
    within 1, 2, 5 and 10 ms, and of broker confirmations within the same bounds. Separates the
    server's time from the client's and the network's, and the broker's share of it."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    shares: dict[str, Any] = {}
    for metric, selector, name in (
        ("p95_webhook_ack_seconds", 'outcome="published"', "server_ack"),
        ("p95_webhook_publish_seconds", "", "broker_confirm"),
    ):
        buckets: dict[str, float] = {}
        total = 0.0
        for line in text.splitlines():
            if selector not in line:
                continue
            if line.startswith(metric + "_bucket{"):
                bound = line.split('le="')[1].split('"')[0]
                buckets[bound] = float(line.rsplit(" ", 1)[1])
            elif line.startswith(metric + "_count"):
                total = float(line.rsplit(" ", 1)[1])
        if total:
            shares[name] = {f"<={ms}ms": round(buckets.get(str(ms / 1000), 0.0) / total, 4) for ms in (1, 2, 5, 10)}
    return shares


def _run(coroutine: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def _published_check(kafka: str, namespace: str, expected: int) -> dict[str, int]:
    from phoenix95.connectors.kafka_admin import message_counts
    from phoenix95.schemas.topics import Topics

    topic = Topics(namespace).signals
    counts = asyncio.run(message_counts(kafka, [topic]))
    return {"messages_on_topic": counts[topic], "expected_messages": expected}


def _clean_redis(url: str, namespace: str) -> None:
    try:
        import redis

        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    except Exception:
        pass


if __name__ == "__main__":
    sys.exit(main())
