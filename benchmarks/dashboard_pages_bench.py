"""Dashboard and API page times with a seeded history: 100,000 signals (with verdicts) and 10,000
closed positions in PostgreSQL (the issue's target: pages <= 200 ms at p95).

    python benchmarks/dashboard_pages_bench.py                      # 127.0.0.1 PostgreSQL and Redis
    python benchmarks/dashboard_pages_bench.py --signals 100000 --closed 10000 --rounds 40

Seeds a schema of its own (dropped at the end), serves the dashboard with uvicorn in this process,
logs in, and requests every page `--rounds` times in turn (the live feed running, as in production);
prints p50 / p95 / max per page in ms and one JSON line. The machine is shared: the load average is
printed with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PAGES = ("/", "/positions", "/signals", "/signals?decision=REJECTED", "/risk", "/backtests")
API = ("/v1/signals?limit=50", "/v1/positions?status=closed&limit=100", "/v1/account", "/v1/verdicts?decision=REJECTED")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--postgres", default=os.environ.get("P95_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
    )
    parser.add_argument("--redis", default=os.environ.get("P95_BENCH_REDIS", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--signals", type=int, default=100_000)
    parser.add_argument("--closed", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    name = "bench" + uuid.uuid4().hex[:8]
    os.environ.update(
        {
            "P95_NAMESPACE": name,
            "P95_POSTGRES__URL": args.postgres,
            "P95_POSTGRES__DB_SCHEMA": name,
            "P95_REDIS__URL": args.redis,
            "P95_REDIS__PREFIX": f"{name}:s4:",
            "P95_HOME": "/nonexistent-p95-home",
            "P95_API__RATE_LIMIT_PER_MINUTE": "100000",
            "P95_DASHBOARD__LOGIN_ATTEMPTS_PER_MINUTE": "1000",
        }
    )
    from phoenix95.settings import get_settings
    from phoenix95.storage.postgres import drop_schema

    settings = get_settings()
    try:
        key = asyncio.run(_seed(settings, args.signals, args.closed))
        figures = _measure(settings, key, args.rounds)
    finally:
        asyncio.run(drop_schema(args.postgres, name))
    load = os.getloadavg()
    print(
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {args.signals} signals, {args.closed} closed positions"
    )
    for path, (p50, p95, worst) in figures.items():
        print(f"{path:<45} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms   max {worst:7.1f} ms")
    print(json.dumps({"signals": args.signals, "closed": args.closed, "pages_ms": figures}))


async def _seed(settings, signals: int, closed: int) -> str:
    from phoenix95.api.accounts import add_user, create_key
    from phoenix95.storage.postgres import Database, migrate
    from tests.dashboard_seed import seed

    await migrate(settings.postgres_url(), settings.postgres.db_schema)
    async with Database(settings.postgres_url(), schema=settings.postgres.db_schema) as db:
        started = time.perf_counter()
        await seed(db, signals=signals, closed=closed, open_positions=5, dead=50)
        await db.execute("ANALYZE")
        print(f"seeded in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        await add_user(db, "bench", "bench password 1", "operator")
        _, key = await create_key(db, "viewer", created_by="bench")
    return key


def _measure(settings, key: str, rounds: int) -> dict[str, tuple[float, float, float]]:
    import httpx

    from phoenix95.api.app import create_app as api_app
    from phoenix95.dashboard.app import create_app
    from tests.dashboard_server import serve

    times: dict[str, list[float]] = {}
    with serve(create_app(settings)) as url, serve(api_app(settings)) as api_url:
        client = httpx.Client(base_url=url, timeout=30)
        assert client.post("/login", data={"username": "bench", "password": "bench password 1"}).status_code == 303
        api = httpx.Client(base_url=api_url, timeout=30, headers={"X-API-Key": key})
        for target, paths in ((client, PAGES), (api, API)):
            for path in paths:
                assert target.get(path).status_code == 200, path  # warm-up
        for _ in range(rounds):
            for target, paths, label in ((client, PAGES, "page "), (api, API, "api ")):
                for path in paths:
                    started = time.perf_counter()
                    response = target.get(path)
                    times.setdefault(label + path, []).append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 200, path
    return {
        path: (
            round(statistics.median(values), 1),
            round(sorted(values)[max(0, int(len(values) * 0.95) - 1)], 1),
            round(max(values), 1),
        )
        for path, values in times.items()
    }


if __name__ == "__main__":
    main()
