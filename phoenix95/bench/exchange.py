"""`p95 bench --only exchange_order_ack`: verdict -> order acknowledged by the exchange, through the real
execution stage, the Binance connector (ccxt, signing, the intent written to PostgreSQL first) and the
Binance simulator of the test suite, at a paced rate (20 orders/s by default). Baseline: the simulator's
own round trip (a signed GET through the same ccxt client), measured in the same run.

Measured per verdict (each its own batch, as a stage gets verdicts arriving 50 ms apart):
- ``value`` / ``p99_ms``: the verdict handed to the stage -> the exchange's answer to the order (the
  acknowledgement the issue's target is about; the intent is written before the order is sent);
- ``stage_p99_ms``: the verdict -> the stage's Order event (after the fee is read and the stop-loss and
  take-profit are placed at the exchange: a FILLED entry is always protected);
- ``pg_statements_per_order``, ``exchange_requests_per_order`` and ``cpu_ms_per_order`` (this
  process's CPU without the simulator's thread: robust on a loaded machine, unlike the latencies).

The simulator lives in tests/binance_sim (the source tree): outside it this scenario is skipped.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any


def _simulator() -> Any:
    root = Path(__file__).resolve().parents[2]
    if (root / "tests" / "binance_sim").is_dir() and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        from tests.binance_sim.thread import SimulatorThread
    except ImportError:
        return None
    return SimulatorThread


async def _thread_cpu() -> float:
    return time.thread_time()


def _count_statements(db: Any) -> list[int]:
    """Count the statements sent through the database (the intents go through fetch and execute)."""
    counter = [0]
    fetch, execute = db.fetch, db.execute

    async def counted_fetch(*args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return await fetch(*args, **kwargs)

    async def counted_execute(*args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return await execute(*args, **kwargs)

    db.fetch, db.execute = counted_fetch, counted_execute
    return counter


def _record_acks(rest: Any) -> dict[str, float]:
    """When the exchange's answer to each order's create arrived (perf_counter), by client order id."""
    acks: dict[str, float] = {}
    create = rest.create

    async def timed(method: str, params: dict[str, Any], **kwargs: Any) -> Any:
        try:
            return await create(method, params, **kwargs)
        finally:
            if method == "fapiPrivatePostOrder":
                acks.setdefault(params["newClientOrderId"], time.perf_counter())

    rest.create = timed
    return acks


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def run(postgres_url: str, *, quick: bool, rate: float = 20.0) -> dict[str, Any]:
    simulator = _simulator()
    if simulator is None:
        return {"value": None, "unit": "ms", "skipped": "the Binance simulator (tests/binance_sim) is not available"}
    return asyncio.run(_measure(simulator, postgres_url, count=100 if quick else 300, rate=rate))


async def _measure(simulator: Any, postgres_url: str, *, count: int, rate: float) -> dict[str, Any]:
    from phoenix95.agents.execution import ExecutionStage
    from phoenix95.agents.ports import InputRecord
    from phoenix95.connectors.exchange.binance import BinanceExchange
    from phoenix95.connectors.exchange.binance_rest import BinanceRest
    from phoenix95.connectors.exchange.intents import IntentStore
    from phoenix95.domain import ids
    from phoenix95.domain.execution import MarketTick
    from phoenix95.domain.trading_state import TradingState
    from phoenix95.schemas.codec import Codec
    from phoenix95.settings import ExchangeSettings
    from phoenix95.storage.postgres import Database, drop_schema, migrate
    from tests.exchange_helpers import approved_verdict

    class _State:
        async def trading_state(self) -> TradingState:
            return TradingState.ACTIVE

        async def orders(self, verdict_ids: Any) -> dict[str, Any]:
            return {}

        async def open_quantity(self, position_ids: Any) -> dict[str, Any]:
            return {}

        async def entry_orders(self, position_ids: Any) -> dict[str, str]:
            return {}

    thread = simulator(weight_limit=10_000_000)
    sim = thread.start()
    schema = "bench_exchange_" + uuid.uuid4().hex[:8]
    await migrate(postgres_url, schema)
    try:
        async with Database(postgres_url, schema=schema) as db:
            settings = ExchangeSettings(
                kind="binance-demo", api_key="sim-key", api_secret="sim-secret", base_url=sim.base_url
            )
            rest = BinanceRest(settings)
            statements = _count_statements(db)
            acks = _record_acks(rest)
            exchange = BinanceExchange(rest, IntentStore(db), settings)
            codec = Codec()
            stage = ExecutionStage(codec, exchange, _State(), quiet_fill_after=0)
            verdicts = [approved_verdict() for _ in range(count)]
            for verdict in verdicts:
                stage.observe(
                    MarketTick(
                        symbol="BTCUSDT",
                        time=verdict.ts_event,
                        price=verdict.price,
                        event_id=ids.derive("bench-tick", verdict.verdict_id),
                    )
                )
            await exchange.ensure_symbol("BTCUSDT", 20, "ISOLATED")  # the first use's setup, not measured
            baseline: list[float] = []
            base_sim_cpu, base_cpu = thread.run(_thread_cpu()), time.process_time()
            for _ in range(min(count, 200)):
                started = time.perf_counter()
                await rest.call("fapiPrivateGetOpenOrders", {"symbol": "BTCUSDT"})
                baseline.append((time.perf_counter() - started) * 1000)
            base_cpu = time.process_time() - base_cpu - (thread.run(_thread_cpu()) - base_sim_cpu)
            latencies: list[float] = []
            ack_latencies: list[float] = []
            statements[0] = 0
            requests_before = rest.requests
            sim_cpu_before = thread.run(_thread_cpu())
            cpu_before = time.process_time()

            async def one(index: int) -> None:
                verdict = verdicts[index]
                record = InputRecord("p95.risk.verdicts", 0, index, None, b"BTCUSDT", codec.encode(verdict))
                client_id = ids.client_order_id(ids.order_id(verdict.verdict_id))
                started = time.perf_counter()
                outcomes = await stage.process([record])
                latencies.append((time.perf_counter() - started) * 1000)
                ack_latencies.append((acks[client_id] - started) * 1000)
                order = outcomes[0].produce[0]
                if getattr(order, "status", None) != "filled":
                    raise RuntimeError(f"bench order not filled: {getattr(order, 'reject_reason', order)}")

            tasks = []
            began = time.perf_counter()
            for index in range(count):
                delay = began + index / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(index)))
            await asyncio.gather(*tasks)
            cpu = time.process_time() - cpu_before - (thread.run(_thread_cpu()) - sim_cpu_before)
            pg_statements, requests = statements[0], rest.requests - requests_before
            await rest.close()
            duplicates = sim.duplicates()
    finally:
        await drop_schema(postgres_url, schema)
        thread.stop()
    p99 = _p(ack_latencies, 0.99)
    base_p99 = _p(baseline, 0.99)
    return {
        "value": round(p99, 2),
        "unit": "ms (p99, verdict -> order acknowledged by the exchange)",
        "target": "<= 50 ms at 20 orders/s",
        "rate_per_s": rate,
        "orders": count,
        "p50_ms": round(statistics.median(ack_latencies), 2),
        "p99_ms": round(p99, 2),
        "max_ms": round(max(ack_latencies), 2),
        "stage_p50_ms": round(statistics.median(latencies), 2),
        "stage_p99_ms": round(_p(latencies, 0.99), 2),
        "pg_statements_per_order": round(pg_statements / count, 2),
        "exchange_requests_per_order": round(requests / count, 2),
        "cpu_ms_per_order": round(cpu * 1000 / count, 2),
        "baseline": {
            "simulator_round_trip_p50_ms": round(statistics.median(baseline), 2),
            "simulator_round_trip_p99_ms": round(base_p99, 2),
            #: the client's CPU for one signed request through ccxt (the simulator's thread excluded)
            "cpu_ms_per_request": round(base_cpu * 1000 / len(baseline), 2),
        },
        "ratio": round(p99 / base_p99, 1) if base_p99 else None,
        "duplicates_at_the_exchange": duplicates,
    }
