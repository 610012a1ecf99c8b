"""The Binance connector (ccxt binanceusdm, real signing) against the simulator, through the real
execution stage and PostgreSQL: exactly one exchange order per verdict whatever the fault, protection
at the exchange, and limits, clock and bans handled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

import pytest

from phoenix95.connectors.exchange.binance_rest import CLOCK_ALARM, ExchangeError
from phoenix95.connectors.exchange.live import LiveExchange
from phoenix95.settings import Settings
from phoenix95.storage import queries
from phoenix95.storage.postgres import Database, migrate
from tests.binance_sim import BinanceSimulator
from tests.exchange_helpers import StageDriver, approved_verdict, client_id_of, sim_settings

pytestmark = pytest.mark.integration


@dataclass
class Venue:
    sim: BinanceSimulator
    db: Database
    live: LiveExchange
    settings: Settings


@pytest.fixture
async def venue(namespace, services) -> AsyncIterator[Venue]:
    await migrate(services.postgres, namespace.schema)
    async with BinanceSimulator() as sim, Database(services.postgres, schema=namespace.schema) as db:
        settings = sim_settings(sim.base_url)
        live = LiveExchange(settings, db, symbols=["BTCUSDT", "ETHUSDT"])
        try:
            yield Venue(sim, db, live, settings)
        finally:
            await live.stop()


#: fault -> (the fault armed on POST /fapi/v1/order, creates that reach the exchange's matching engine)
FAULTS = {
    "none": (None, 1),
    "response lost after the order was accepted": ("lose_response", 1),
    "-1006 after the order was accepted": ("-1006", 1),
    "-1007 after the order was accepted": ("-1007", 1),
    "malformed answer": ("malformed", 1),
    "429 with Retry-After": ("429", 1),
    "-1021 (clock)": ("-1021", 1),
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_exactly_one_exchange_order_per_verdict_whatever_the_fault(venue, fault):
    kind, creates = FAULTS[fault]
    if kind is not None:
        venue.sim.inject(kind, "/fapi/v1/order", method="POST")
    driver = StageDriver(venue.live)
    verdict = approved_verdict()
    order = await driver.deliver(verdict, remember=False)  # a worker killed before it wrote the order...
    again = await driver.deliver(verdict)  # ...gets the verdict again
    client_id = client_id_of(verdict)
    assert order.status == "filled" and again.status == "filled", (order.reject_reason, again.reject_reason)
    assert again.exchange_order_id == order.exchange_order_id
    assert again.fill is not None and again.fill.fee > 0  # the fee the exchange charged
    assert len(venue.sim.orders_for(client_id)) == creates
    assert venue.sim.duplicates() == 0
    assert venue.sim.banned == 0  # a 429's Retry-After was honoured: never escalated to a 418
    posts = venue.sim.requests_to("/fapi/v1/order", "POST")
    # The create is sent once, and once more only after a definite refusal (429, -1021) and a query.
    assert len(posts) == (2 if kind in ("429", "-1021") else 1)
    assert all(p.params["newClientOrderId"] == client_id for p in posts)


async def test_an_order_the_exchange_never_got_is_not_placed_and_never_sent_again(venue):
    venue.settings.exchange.not_placed_after_s = 0
    venue.settings.exchange.recv_window_ms = 1000
    venue.sim.inject("-1006", "/fapi/v1/order", method="POST", execute=False)
    driver = StageDriver(venue.live)
    verdict = approved_verdict()
    order = await driver.deliver(verdict, remember=False)
    assert order.status == "rejected" and order.reject_reason == "EXCHANGE_STATUS_UNKNOWN"
    await asyncio.sleep(1.1)  # past recvWindow: Binance would refuse the request now
    again = await driver.deliver(verdict)
    assert again.status == "rejected" and again.reject_reason == "EXCHANGE_NOT_PLACED"
    assert venue.sim.orders_for(client_id_of(verdict)) == []
    assert len(venue.sim.requests_to("/fapi/v1/order", "POST")) == 1


async def test_a_418_halts_trading_and_nothing_more_is_sent(venue):
    venue.sim.inject("418", "/fapi/v1/order", method="POST", retry_after=120)
    driver = StageDriver(venue.live)
    first = await driver.deliver(approved_verdict())
    assert first.status == "rejected" and first.reject_reason == "EXCHANGE_HALTED"
    state, reason, _ = await queries.trading_state(venue.db)
    assert state.value == "HALTED" and "418" in (reason or "")
    sent = len(venue.sim.requests)
    second = await driver.deliver(approved_verdict())
    assert second.status == "rejected"
    assert len(venue.sim.requests) == sent  # banned: not one more request
    assert venue.sim.order_creates() == 0


async def test_clock_drift_is_measured_alarmed_and_a_minus_1021_is_resolved_by_resync(venue):
    driver = StageDriver(venue.live)
    await driver.deliver(approved_verdict())
    venue.sim.clock_skew_ms = -1500  # the local clock runs 1.5 s ahead of the exchange: -1021
    order = await driver.deliver(approved_verdict())
    assert order.status == "filled"
    assert CLOCK_ALARM._value.get() == 1  # drift > 1 s
    assert venue.live.rest.offset_ms < -1000
    assert any(r.status == 400 for r in venue.sim.requests_to("/fapi/v1/order", "POST"))  # the -1021
    assert venue.sim.duplicates() == 0


async def test_first_use_of_a_symbol_sets_isolated_margin_and_the_verdicts_leverage(venue):
    driver = StageDriver(venue.live)
    verdict = approved_verdict()
    await driver.deliver(verdict)
    assert verdict.plan is not None
    assert venue.sim.state.margin_type["BTCUSDT"] == "isolated"
    assert venue.sim.state.leverage["BTCUSDT"] == verdict.plan.leverage
    sent = dict(venue.sim.requests_to("/fapi/v1/order", "POST")[0].params)
    assert Decimal(sent["quantity"]) % Decimal("0.001") == 0  # rounded to the LOT_SIZE step of exchangeInfo


async def test_protection_goes_to_the_algo_api_and_the_old_endpoint_answers_minus_4120(venue):
    with pytest.raises(ExchangeError) as refused:
        await venue.live.rest.create(
            "fapiPrivatePostOrder",
            {"symbol": "BTCUSDT", "side": "SELL", "type": "STOP_MARKET", "quantity": "0.01", "stopPrice": "50000"},
        )
    assert refused.value.code == -4120
    driver = StageDriver(venue.live)
    verdict = approved_verdict()
    await driver.deliver(verdict)
    algo = sorted(venue.sim.state.algo.values(), key=lambda a: a.order_type)
    assert [(a.order_type, a.side, a.reduce_only, a.status) for a in algo] == [
        ("STOP_MARKET", "SELL", True, "NEW"),
        ("TAKE_PROFIT_MARKET", "SELL", True, "NEW"),
    ]
    assert algo[0].trigger_price < Decimal(60000) < algo[1].trigger_price
    assert algo[0].quantity == venue.sim.orders_for(client_id_of(verdict))[0].executed


async def test_a_stop_fired_at_the_exchange_cancels_the_take_profit_through_the_user_stream(venue):
    driver = StageDriver(venue.live)
    await driver.deliver(approved_verdict())
    stream = asyncio.create_task(venue.live.stream.run())
    try:
        await asyncio.wait_for(venue.live.stream.connected.wait(), 30)
        await _until(lambda: bool(venue.sim._user_sockets))  # the simulator has registered the socket
        stop = next(a for a in venue.sim.state.algo.values() if a.order_type == "STOP_MARKET")
        await venue.sim.set_mark("BTCUSDT", stop.trigger_price - 10)
        await _until(
            lambda: (
                {a.order_type: a.status for a in venue.sim.state.algo.values()}
                == {"STOP_MARKET": "FINISHED", "TAKE_PROFIT_MARKET": "CANCELED"}
            )
        )
        assert venue.sim.state.positions["BTCUSDT"].amount == 0
        await _until(lambda: venue.live.stream.events > 0)  # the ALGO_UPDATE and fills came by the stream
    finally:
        stream.cancel()


async def test_with_the_streams_dropped_a_fired_stop_is_found_by_polling(venue):
    driver = StageDriver(venue.live)
    await driver.deliver(approved_verdict())
    stream = asyncio.create_task(venue.live.stream.run())
    try:
        await asyncio.wait_for(venue.live.stream.connected.wait(), 30)
        await _until(lambda: bool(venue.sim._user_sockets))
        assert await venue.sim.drop_websockets() >= 1
        await _until(lambda: venue.live.stream.reconnects >= 1)  # the client saw the stream go
        take_profit = next(a for a in venue.sim.state.algo.values() if a.order_type == "TAKE_PROFIT_MARKET")
        await venue.sim.fire_algo(take_profit.client_algo_id)  # fired while the stream was down
        await _until(
            lambda: next(a for a in venue.sim.state.algo.values() if a.order_type == "STOP_MARKET").status == "CANCELED"
        )
        assert venue.live.stream.reconnects >= 1
    finally:
        stream.cancel()


async def test_phoenix95_closing_a_position_cancels_both_protection_orders(venue):
    driver = StageDriver(venue.live)
    verdict = approved_verdict()
    entry = await driver.deliver(verdict)
    assert entry.status == "filled" and len(venue.sim.state.algo) == 2
    close = approved_verdict(action="sell").model_copy(
        update={"intent": "close", "close_position_id": "0b3b5e0e-0000-5000-8000-000000000001"}
    )
    driver.state.open["0b3b5e0e-0000-5000-8000-000000000001"] = entry.quantity
    exit_order = await driver.deliver(close)
    assert exit_order.status == "filled"
    assert venue.sim.state.positions["BTCUSDT"].amount == 0
    assert {a.status for a in venue.sim.state.algo.values()} == {"CANCELED"}


async def _until(check, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.05)


async def test_an_entry_found_filled_after_a_crash_gets_its_protection_and_is_never_sent_again(venue):
    from phoenix95.connectors.exchange.intents import Intent

    verdict = approved_verdict()
    assert verdict.plan is not None
    client_id = client_id_of(verdict)
    # The worker claimed and sent the order, the exchange filled it, the worker died before the answer.
    await venue.live.exchange.store.claim(
        Intent(
            client_order_id=client_id,
            kind="entry",
            exchange="binance-demo",
            symbol="BTCUSDT",
            side="buy",
            quantity=Decimal("0.01"),
            reduce_only=False,
            reference_price=Decimal(60000),
            stop_loss=verdict.plan.stop_loss_price,
            take_profit=verdict.plan.take_profit_price,
            planned_entry=verdict.plan.entry_price,
        )
    )
    await venue.sim.external_order("BTCUSDT", "BUY", "0.01", client_order_id=client_id)
    order = await StageDriver(venue.live).deliver(verdict)  # the verdict, re-delivered to the new worker
    assert order.status == "filled" and order.fill is not None and order.fill.quantity == Decimal("0.01")
    assert venue.sim.requests_to("/fapi/v1/order", "POST") == []  # found by its id, not sent
    assert sorted((a.order_type, a.status) for a in venue.sim.state.algo.values()) == [
        ("STOP_MARKET", "NEW"),
        ("TAKE_PROFIT_MARKET", "NEW"),
    ]
