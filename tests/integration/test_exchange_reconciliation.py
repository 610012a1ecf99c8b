"""Reconciliation on restart against the simulator: what happened at the exchange while the workers
were stopped is adopted, closed or flagged - exactly the planted differences - and an unresolvable one
leaves trading HALTED with the differences listed (fail closed). Also `p95 exchange check|reconcile`."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from decimal import Decimal

import pytest

from phoenix95.connectors.exchange.intents import Intent
from phoenix95.connectors.exchange.live import LiveExchange
from phoenix95.connectors.kafka_admin import ensure_topics, read_records
from phoenix95.schemas.codec import Codec
from phoenix95.schemas.messages import ControlEvent
from phoenix95.schemas.topics import Topics
from phoenix95.storage import queries
from phoenix95.storage.postgres import Database, migrate
from phoenix95.streams.producer import LazyProducer
from tests.binance_sim import BinanceSimulator
from tests.exchange_helpers import StageDriver, approved_verdict, client_id_of, sim_settings, write_open_position

pytestmark = pytest.mark.integration


async def _plant(sim: BinanceSimulator, db: Database, settings, *, stranger: bool) -> dict[str, str]:
    """Trade, then stop the workers and let the exchange move on without them."""
    first = LiveExchange(settings, db)
    driver = StageDriver(first)
    btc = approved_verdict("BTCUSDT", "60000")
    entry = await driver.deliver(btc)
    assert entry.fill is not None
    position_id = await write_open_position(db, btc, entry.fill.price, entry.quantity)
    await first.stop()
    # -- the workers are down --
    stop = next(a for a in sim.state.algo.values() if a.order_type == "STOP_MARKET")
    await sim.set_mark("BTCUSDT", stop.trigger_price - Decimal("5"))  # the stop fires at the exchange
    eth = approved_verdict("ETHUSDT", "3000")
    eth_id = client_id_of(eth)
    # A worker killed right after sending an order: the intent is SENT, the exchange filled it.
    await first.exchange.store.claim(
        Intent(
            client_order_id=eth_id,
            kind="entry",
            exchange=settings.exchange.kind,
            symbol="ETHUSDT",
            side="buy",
            quantity=Decimal("0.5"),
            reduce_only=False,
            reference_price=Decimal(3000),
        )
    )
    await sim.external_order("ETHUSDT", "BUY", "0.5", client_order_id=eth_id)
    await sim.pay_funding("BTCUSDT", "-0.35")
    if stranger:
        await sim.external_order("SOLUSDT", "BUY", "3")  # opened by hand in the Binance app
    return {"btc_position": position_id, "eth": eth_id, "stop": stop.client_algo_id}


async def test_restart_adopts_closes_and_flags_exactly_the_planted_differences_and_stays_halted(namespace, services):
    await migrate(services.postgres, namespace.schema)
    await ensure_topics(services.kafka, Topics(namespace.name).all(), partitions=1)
    async with BinanceSimulator() as sim, Database(services.postgres, schema=namespace.schema) as db:
        settings = sim_settings(sim.base_url)
        planted = await _plant(sim, db, settings, stranger=True)
        restarted = LiveExchange(settings, db, symbols=["BTCUSDT", "ETHUSDT"], publisher=LazyProducer(settings))
        try:
            report = await restarted.start()
        finally:
            await restarted.stop()
        print("\nreconciliation report on restart:\n" + json.dumps(report.as_dict(), indent=1, default=str))
        by_kind = {}
        for difference in report.differences:
            by_kind.setdefault(difference.kind, []).append(difference)
        assert sorted(by_kind) == [
            "fills_adopted",
            "order_in_flight",
            "order_settled",
            "position_closed_at_exchange",
            "protection_fired",
            "unknown_position",
        ]
        assert [d.subject for d in by_kind["order_settled"]] == [planted["eth"]]
        assert [d.subject for d in by_kind["order_in_flight"]] == [planted["eth"]]
        assert [d.subject for d in by_kind["position_closed_at_exchange"]] == ["BTCUSDT"]
        assert [d.subject for d in by_kind["unknown_position"]] == ["SOLUSDT"]
        assert [d.subject for d in by_kind["protection_fired"]] == [planted["stop"]]
        # The stop's fill and the stranger's (the ETH fill was recorded when its order was settled).
        assert sorted(d.subject for d in by_kind["fills_adopted"]) == ["BTCUSDT", "SOLUSDT"]
        assert [d.kind for d in report.unresolved] == ["unknown_position"]
        assert report.adopted_income == 1
        # Fail closed: HALTED, with the difference in the reason.
        assert report.halted
        state, reason, _ = await queries.trading_state(db)
        assert state.value == "HALTED" and "unknown_position SOLUSDT" in (reason or "")
        # The position the exchange closed is closed in PostgreSQL at the exchange's closing price.
        rows = await db.fetch(
            "SELECT status, close_reason, exit_price FROM positions WHERE position_id = %s::uuid",
            (planted["btc_position"],),
        )
        stop_fill = sim.state.trades[1]
        assert rows[0][0] == "closed" and rows[0][1] == "EXCHANGE_CLOSED"
        assert rows[0][2] == Decimal(stop_fill["price"])
        # The take-profit of the closed position was cancelled; the ETH order was adopted, not re-sent.
        assert {a.order_type: a.status for a in sim.state.algo.values()} == {
            "STOP_MARKET": "FINISHED",
            "TAKE_PROFIT_MARKET": "CANCELED",
        }
        assert len(sim.orders_for(planted["eth"])) == 1
        # Fills with the exchange's fees, and the funding, are in PostgreSQL.
        fills = await db.fetch("SELECT COUNT(*), SUM(commission) FROM exchange_fills")
        assert fills[0][0] == len(sim.state.trades)
        assert fills[0][1] == sum(Decimal(t["commission"]) for t in sim.state.trades)
        income = await db.fetch("SELECT income_type, amount FROM exchange_income")
        assert income == [("FUNDING_FEE", Decimal("-0.35000000"))]
        stored = await db.fetch("SELECT trigger, ok, halted FROM exchange_reconciliations")
        assert stored == [("start", False, True)]
        # ...and published as a control event.
        codec = Codec()
        topic = Topics(namespace.name).control_events
        events = [
            codec.decode(r.value, ControlEvent) async for r in read_records(settings.kafka.bootstrap_servers, [topic])
        ]
        assert [(e.kind, e.severity, e.subject) for e in events] == [
            ("protection", "warning", "BTCUSDT"),  # the stop that fired while the workers were down
            ("reconciliation", "critical", "binance-demo"),
        ]
        assert "unknown_position SOLUSDT" in events[1].message and events[1].state == "HALTED"


async def test_restart_without_an_unknown_position_resolves_everything_and_keeps_trading(namespace, services):
    await migrate(services.postgres, namespace.schema)
    async with BinanceSimulator() as sim, Database(services.postgres, schema=namespace.schema) as db:
        settings = sim_settings(sim.base_url)
        await _plant(sim, db, settings, stranger=False)
        restarted = LiveExchange(settings, db)
        try:
            report = await restarted.start()
            assert report.ok and not report.halted, report.summary()
            state, _, _ = await queries.trading_state(db)
            assert state.value == "ACTIVE"
            # The re-delivered ETH verdict: its order is found FILLED by client order id, not sent again.
            again = await restarted.query([client_id_of(approved_verdict("ETHUSDT", "3000"))])
            assert again == {}  # (a different verdict: never sent)
        finally:
            await restarted.stop()


def _cli_env(namespace, sim: BinanceSimulator, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        **namespace.env,
        "P95_EXCHANGE__KIND": "binance-demo",
        "P95_EXCHANGE__API_KEY": "sim-key",
        "P95_EXCHANGE__API_SECRET": "sim-secret",
        "P95_EXCHANGE__BASE_URL": sim.base_url,
        "COLUMNS": "400",  # one line per message, not wrapped at a terminal's width
        **extra,
    }


async def _p95(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "phoenix95",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode or 0, out.decode(), err.decode()


async def test_exchange_check_reports_the_account_and_wrong_keys_in_one_line(namespace, services):
    async with BinanceSimulator() as sim:
        next(iter(sim.state.keys.values())).withdrawals = True
        await sim.external_order("BTCUSDT", "BUY", "0.01")
        code, out, err = await _p95(_cli_env(namespace, sim), "exchange", "check", "--json")
        assert code == 0, err
        result = json.loads(out)
        assert result["connectivity"] and result["can_trade"] is True and result["withdrawals"] is True
        assert result["positions"][0]["symbol"] == "BTCUSDT" and result["balance"]["USDT"]
        assert any("WITHDRAW" in w for w in result["warnings"])
        code, out, err = await _p95(_cli_env(namespace, sim, P95_EXCHANGE__API_KEY="wrong"), "exchange", "check")
        assert code == 2
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines[-1].startswith("error: the API key was refused") and "Traceback" not in err
        code, _, err = await _p95(_cli_env(namespace, sim, P95_EXCHANGE__API_KEY=""), "exchange", "check")
        assert code == 2 and "P95_EXCHANGE__API_KEY" in err
        code, _, err = await _p95(_cli_env(namespace, sim, P95_EXCHANGE__KIND="binance"), "exchange", "check")
        assert code == 2 and "LIVE_CONFIRM=yes" in err


async def test_exchange_reconcile_cli_lists_the_differences_as_json(namespace, services):
    async with BinanceSimulator() as sim:
        await sim.external_order("SOLUSDT", "SELL", "2")
        code, out, err = await _p95(_cli_env(namespace, sim), "exchange", "reconcile", "--json")
        assert code == 0, err
        report = json.loads(out)
        assert report["halted"] is True and report["ok"] is False
        assert [(d["kind"], d["subject"]) for d in report["differences"] if not d["resolved"]] == [
            ("unknown_position", "SOLUSDT")
        ]
