"""CPU per price of the price path, in this process, without Faust: the risk, execution and positions
stages' own work (decode, decide, write through the real sink to PostgreSQL and Redis; the time series
off) with a book of open positions, as `price_throughput` sets it up (ten symbols, 200 positions, half
long, half short), fed batches of prices of the ten symbols. CPU is `time.process_time()` of this
process, so the machine's load does not count (the figure for #23's before/after tables).

    python benchmarks/price_path_cpu.py                          # 200 positions, 20,000 prices
    python benchmarks/price_path_cpu.py --positions 200 --prices 20000 --batches 10,500,2000 --step-ms 1

A batch of 10 is what a live feed gives a worker (one price per symbol); a batch of 2,000 is a backlog
(Faust hands the stage up to `kafka.batch_max_records`).
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
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from stage_cpu import OPEN_LIMITS, Capture, cpu, drive, peers, records

from tests import factories
from tests.faults.test_scale_out import LiveFeed


def book(feed: LiveFeed, count: int, at: datetime) -> list[Any]:
    """`count` open positions over the ten symbols, half long and half short, ~400 USDT notional; 5x
    leverage and a 10 % stop and target, so the feed's random walk closes none of them."""
    from phoenix95.domain.config import TradingConfig

    config = TradingConfig(stop_loss_pct=Decimal("0.1"), take_profit_pct=Decimal("0.1"))
    symbols = list(feed.prices)
    positions = []
    for index in range(count):
        symbol = symbols[index % len(symbols)]
        price = feed.prices[symbol]
        step = feed.config.rules(symbol).step_size
        quantity = max(step, (Decimal(400) / price).quantize(step))
        side: Literal["long", "short"] = "long" if (index // len(symbols)) % 2 == 0 else "short"
        positions.append(
            factories.position(
                symbol=symbol, side=side, price=price, quantity=quantity, at=at, leverage=5, config=config
            )
        )
    return positions


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    from phoenix95.agents.base import StageRunner
    from phoenix95.schemas import topics
    from phoenix95.schemas.codec import Codec
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
    database = Database(url, schema=schema, min_size=2, max_size=2)
    await database.open()
    redis = RedisState.from_url(settings.redis_url(), prefix=settings.redis.prefix)
    codec = Codec.for_settings(settings)
    codec.prepare()
    feed = LiveFeed(settings.namespace, 0)
    start = datetime.now(UTC) - timedelta(hours=1)
    positions = book(feed, args.positions, start)
    report: dict[str, Any] = {
        "positions": args.positions,
        "prices_per_batch_size": args.prices,
        "step_ms": args.step_ms,
        "stages": {},
    }
    try:
        # the book is made here, not from orders: its positions have no trade rows to refer to
        await database.execute(f"ALTER TABLE {schema}.positions DROP CONSTRAINT IF EXISTS positions_trade_id_fkey")
        await database.fetch("SELECT 1")
        backends = peers([os.getpid()], int(url.rsplit(":", 1)[1].split("/")[0]))
        clock = start
        for size in [int(s) for s in args.batches.split(",")]:
            for name in ("risk", "execution", "positions"):
                stage = build_stage(name, settings, codec, database)
                await stage.start()
                if name == "positions":
                    stage.open = {p.position_id: p for p in positions}  # type: ignore[attr-defined]
                outbox = PgOutbox(database, codec) if stage.uses_outbox else None
                runner = StageRunner(stage, StoreSink(database, redis, None), Capture(codec), outbox=outbox)
                steps = args.prices // 10
                every = timedelta(milliseconds=args.step_ms)
                prices = [e for step in range(steps) for e in feed.tick(clock + every * (step + 1))]
                clock += every * steps + timedelta(seconds=1)
                batch = records(codec, topics.MARKET_PRICES, prices)
                started, pg = time.process_time(), sum(cpu(p) for p in backends)
                await drive(runner, batch, size)
                spent, pg_spent = time.process_time() - started, sum(cpu(p) for p in backends) - pg
                figures = report["stages"].setdefault(name, {})
                figures[f"batch_{size}"] = {
                    "cpu_us_per_price": round(spent / len(prices) * 1e6, 1),
                    "postgres_cpu_us_per_price": round(pg_spent / len(prices) * 1e6, 1),
                }
                if name == "positions":
                    still = len(stage.open)  # type: ignore[attr-defined]
                    figures[f"batch_{size}"]["open_after"] = still
                    positions = list(stage.open.values())  # type: ignore[attr-defined]
                await stage.stop()
    finally:
        await redis.close()
        await database.close()
        await drop_schema(url, schema)
    report["load_average"] = [round(x, 1) for x in os.getloadavg()]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--positions", type=int, default=200)
    parser.add_argument("--prices", type=int, default=20000, help="prices per batch size and stage")
    parser.add_argument("--batches", default="10,2000", help="batch sizes, comma-separated")
    parser.add_argument(
        "--step-ms", type=float, default=1.0, help="event time between a symbol's prices (1: 10,000 prices/s)"
    )
    args = parser.parse_args()
    name = "pcpu" + uuid.uuid4().hex[:8]
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
