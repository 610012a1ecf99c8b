"""Kill -9 any worker while the execution stage trades on the Binance simulator (the real connector,
ccxt and signing): still exactly one exchange order per verdict - 0 duplicates at the exchange - and
every order the exchange filled is recorded as filled.

Reduced size by default; larger: P95_FAULTS_EXCHANGE_SIGNALS=2000 P95_FAULTS_EXCHANGE_SECONDS=90."""

from __future__ import annotations

import json
import os

import pytest

from tests.binance_sim.thread import SimulatorThread
from tests.faults.harness import TRADING_ENV, Chaos, assert_nothing_lost_or_doubled, kill_plan, run_scenario, workload
from tests.pipeline import Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SIGNALS = int(os.environ.get("P95_FAULTS_EXCHANGE_SIGNALS", "150"))
SECONDS = float(os.environ.get("P95_FAULTS_EXCHANGE_SECONDS", "20"))
KILLS = int(os.environ.get("P95_FAULTS_KILLS", "4"))


def test_sigkill_of_every_stage_against_the_exchange_simulator_sends_no_duplicate_order(namespace, monkeypatch):
    from phoenix95.settings import get_settings
    from phoenix95.storage.postgres import Database

    with SimulatorThread(weight_limit=1_000_000) as sim:
        env = {
            **TRADING_ENV,
            # Large enough for the exchange's minimum notional once rounded to its lot size.
            "P95_RISK__MAX_POSITION_FRACTION": "0.002",
            "P95_EXCHANGE__KIND": "binance-demo",
            "P95_EXCHANGE__API_KEY": "sim-key",
            "P95_EXCHANGE__API_SECRET": "sim-secret",
            "P95_EXCHANGE__BASE_URL": sim.base_url,
            "P95_EXCHANGE__NOT_PLACED_AFTER_S": "1",
            "P95_EXCHANGE__RESOLVE_INTERVAL_S": "0.1",
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
            namespace.env[key] = value
        get_settings.cache_clear()
        pipeline = Pipeline(namespace)
        work = workload(namespace.name, SIGNALS)
        pipeline.start()
        chaos = Chaos(pipeline, kill_plan(SECONDS, KILLS))
        try:
            counts = run_scenario(pipeline, work, duration=SECONDS, faults=chaos.start, timeout=SECONDS * 4 + 180)
        finally:
            chaos.stop.set()
            pipeline.stop()

        async def recorded() -> tuple[set[str], list[tuple[str, str]], list[tuple[str, int]]]:
            async with Database(pipeline.settings.postgres_url(), schema=namespace.schema) as db:
                filled = {r[0] for r in await db.fetch("SELECT client_order_id FROM orders WHERE status = 'filled'")}
                state = [(r[0], r[1] or "") for r in await db.fetch("SELECT state, reason FROM trading_state")]
                reasons = [
                    (r[0] or "", int(r[1]))
                    for r in await db.fetch(
                        "SELECT reject_reason, COUNT(*) FROM orders WHERE status = 'rejected' GROUP BY 1"
                    )
                ]
                return filled, state, reasons

        filled, state, reasons = sim_run(recorded())
        ours = [o for o in sim.state.orders.values() if o.client_order_id.startswith("p95-")]
        posts = len(sim.requests_to("/fapi/v1/order", "POST"))
        exchange = {
            "orders_sent_to_the_exchange": posts,
            "orders_at_the_exchange": len(ours),
            "duplicate_orders_at_the_exchange": sim.duplicates(),
            "protection_orders_at_the_exchange": len(sim.state.algo),
            "filled_at_the_exchange_but_not_recorded_filled": len({o.client_order_id for o in ours} - filled),
            "recorded_filled_but_not_at_the_exchange": len(filled - {o.client_order_id for o in ours}),
            "rejected_orders_by_reason": reasons,
            "trading_state": state,
            "kills": chaos.killed,
        }
    print(f"\nsigkill against the exchange simulator: {json.dumps({**counts, **exchange}, indent=1, default=str)}")
    assert {stage for _, stage, _ in chaos.killed} >= {"analysis", "risk", "execution", "positions"}
    assert exchange["duplicate_orders_at_the_exchange"] == 0
    assert exchange["filled_at_the_exchange_but_not_recorded_filled"] == 0
    assert exchange["recorded_filled_but_not_at_the_exchange"] == 0
    assert len(ours) > 0
    assert_nothing_lost_or_doubled(counts)


def sim_run(coroutine):
    import asyncio

    return asyncio.run(coroutine)
