"""`p95 bench --only e2e_sse_clients`: the pipeline's end-to-end throughput with and without 100 open
dashboards, in the same run (issue #19: 100 SSE clients may cost at most 5 %).

Two `e2e_throughput` runs of the same workload, each in a namespace of its own: the first bare, the
second with `p95 dashboard` serving that namespace (its own process, its live feed polling the stores)
and 100 logged-in SSE clients (another process) connected through the run, counting the events they
receive. The clients read the dashboard's Redis stream, never the stages; the figure says what that
costs the pipeline on this machine.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from typing import Any

from phoenix95.settings import Settings

USER, PASSWORD = "bench", "bench-password-123"


def run(base: Settings, *, signals: int, clients: int = 100) -> dict[str, Any]:
    from phoenix95.bench import pipeline

    bare = pipeline.e2e_throughput(base, signals=signals)
    with pipeline.BenchPipeline(base, {"P95_RISK__CLOCK": "event"}) as running:
        watched = asyncio.run(_with_clients(running, signals, clients))
    cost = 1 - watched["value"] / bare["value"] if bare.get("value") else None
    return {
        "value": round(cost * 100, 1) if cost is not None else None,
        "unit": "% of e2e throughput lost with the clients",
        "signals_per_s_without": bare["value"],
        "signals_per_s_with": watched["value"],
        "clients": clients,
        "clients_connected": watched["clients_connected"],
        "events_received": watched["events_received"],
        "dashboard_alive_at_end": watched["dashboard_alive_at_end"],
        "dashboard_log": watched["dashboard_log"],
        "signals": signals,
    }


async def _with_clients(running: Any, signals: int, clients: int) -> dict[str, Any]:
    from phoenix95.api.accounts import add_user
    from phoenix95.bench.pipeline import _e2e_throughput
    from phoenix95.storage.postgres import Database

    settings = running.settings
    async with Database(settings.postgres_url(), schema=settings.postgres.db_schema) as db:
        await add_user(db, USER, PASSWORD, "viewer")
    port = _free_port()
    env = {**os.environ, **running.env}
    log_dir = settings.home / "logs" / running.run_id
    log_dir.mkdir(parents=True, exist_ok=True)
    log = (log_dir / "dashboard.log").open("w")
    dashboard = subprocess.Popen(
        [sys.executable, "-m", "phoenix95", "--log-level", "INFO", "dashboard", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=log,
    )
    watchers = None
    try:
        url = f"http://127.0.0.1:{port}"
        await _wait_up(url)
        watchers = subprocess.Popen(
            [sys.executable, "-m", "phoenix95.bench.dashboard_sse", url, str(clients)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        await asyncio.sleep(3.0)  # the clients are logged in and connected
        figure = await _e2e_throughput(running, signals, 900.0)
    finally:
        report = ""
        if watchers is not None:
            watchers.terminate()
            report = watchers.communicate(timeout=30)[0]
        alive = dashboard.poll() is None
        dashboard.terminate()
        dashboard.wait(timeout=30)
        log.close()
    connected, events = (int(x) for x in (report.split() or ["0", "0"])[:2])
    return {
        **figure,
        "clients_connected": connected,
        "events_received": events,
        "dashboard_alive_at_end": alive,
        "dashboard_log": str(log_dir / "dashboard.log"),
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _wait_up(url: str, timeout: float = 180.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(url + "/login")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.3)
    raise TimeoutError(f"the dashboard did not come up on {url}")


async def _clients(url: str, count: int) -> None:
    """`count` SSE clients until terminated; prints "connected events" on SIGTERM."""
    import signal

    import httpx

    connected = 0
    events = 0
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with httpx.AsyncClient(base_url=url, timeout=None, limits=httpx.Limits(max_connections=count + 5)) as http:
        response = await http.post("/login", data={"username": USER, "password": PASSWORD})
        if response.status_code != 303:
            print("0 0", flush=True)
            return

        async def listen() -> None:
            nonlocal connected, events
            async with http.stream("GET", "/events") as stream:
                if stream.status_code != 200:  # not logged in, or refused: not a connected client
                    return
                connected += 1
                async for line in stream.aiter_lines():
                    if line.startswith("event:"):
                        events += 1

        tasks = [asyncio.create_task(listen()) for _ in range(count)]
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    print(f"{connected} {events}", flush=True)


if __name__ == "__main__":
    asyncio.run(_clients(sys.argv[1], int(sys.argv[2])))
