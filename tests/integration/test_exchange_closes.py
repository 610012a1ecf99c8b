"""How a live position ends, against the simulator (the real connector and ccxt, PostgreSQL): held to
its expiry it is closed by a reduce-only order at the exchange (exactly one, however often the close is
issued or delivered), its protection cancelled; a commission paid in BNB counts in USDT; funding
reported after the close reaches the closed position's realized PnL once; and a stop that fired while
the user-data stream was down is found by polling and closes the position with the exchange's fill."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from phoenix95.agents.execution import ExecutionStage
from phoenix95.agents.ports import InputRecord, Outcome, PositionChanged, VerdictMade
from phoenix95.agents.positions import PositionStage
from phoenix95.connectors.exchange.brackets import bundled_brackets
from phoenix95.connectors.exchange.live import LiveExchange
from phoenix95.domain import ids
from phoenix95.domain.config import TradingConfig
from phoenix95.domain.execution import MarketTick
from phoenix95.domain.values import money
from phoenix95.schemas.codec import Codec
from phoenix95.schemas.messages import Order, RiskVerdict
from phoenix95.storage.exchange_ledger import PgExchangeLedger
from phoenix95.storage.postgres import Database, migrate
from phoenix95.storage.readers import PgExecutionState, PgPositionStore
from phoenix95.storage.sink import StoreSink
from tests.binance_sim import BinanceSimulator
from tests.exchange_helpers import approved_verdict, sim_settings

pytestmark = pytest.mark.integration

BNB_PRICE = Decimal("612.34")


@dataclass
class Desk:
    """The execution and positions stages on the live connector, writing to PostgreSQL."""

    sim: BinanceSimulator
    db: Database
    live: LiveExchange
    codec: Codec
    sink: StoreSink
    config: TradingConfig
    execution: ExecutionStage
    positions: PositionStage
    offset: int = 0

    def positions_stage(self) -> PositionStage:
        """A (re)started positions stage (call `start`)."""
        brackets = bundled_brackets()
        return PositionStage(
            self.codec,
            self.config,
            brackets,
            PgPositionStore(self.db, brackets, self.config.funding_interval),
            ledger=PgExchangeLedger(self.db, self.live.name),
            late_funding_every=0,
        )

    async def execute(self, verdict: RiskVerdict, *, stage: ExecutionStage | None = None) -> Order:
        """One verdict record through the execution stage (the next price right after it); the order
        and its rows written."""
        stage = stage or self.execution
        stage.observe(
            MarketTick(
                symbol=verdict.symbol,
                time=verdict.ts_event + timedelta(milliseconds=1),
                price=self.sim.state.marks[verdict.symbol],
                event_id=ids.derive("tick", verdict.verdict_id, self.offset),
            )
        )
        self.offset += 1
        record = InputRecord("p95.risk.verdicts", 0, self.offset, None, b"BTCUSDT", self.codec.encode(verdict))
        outcomes = await stage.process([record])
        assert len(outcomes) == 1 and len(outcomes[0].produce) == 1, outcomes
        assert not await self.sink.persist("execution", outcomes)
        order = outcomes[0].produce[0]
        assert isinstance(order, Order)
        return order

    async def to_positions(self, order: Order, stage: PositionStage | None = None) -> list[PositionChanged]:
        stage = stage or self.positions
        self.offset += 1
        record = InputRecord("p95.orders", 0, self.offset, None, order.symbol.encode(), self.codec.encode(order))
        return await self.persist(await stage.process([record]))

    async def persist(self, outcomes: list[Outcome]) -> list[PositionChanged]:
        assert not await self.sink.persist("positions", outcomes)
        return [fact for outcome in outcomes for fact in outcome.persist if isinstance(fact, PositionChanged)]

    async def open(self) -> tuple[Order, str]:
        order = await self.execute(approved_verdict("BTCUSDT", "60000"))
        assert order.status == "filled", order.reject_reason
        opened = await self.to_positions(order)
        assert [f.event.kind for f in opened] == ["opened"]
        return order, ids.position_id(order.order_id)

    async def row(self, position_id: str) -> dict[str, object]:
        names = (
            "status",
            "close_reason",
            "entry_price",
            "exit_price",
            "total_fees_paid",
            "funding_paid",
            "realized_pnl",
        )
        rows = await self.db.fetch(f"SELECT {', '.join(names)} FROM positions WHERE position_id = %s", (position_id,))
        return dict(zip(names, rows[0], strict=True))


@pytest.fixture
async def desk(namespace, services) -> AsyncIterator[Desk]:
    await migrate(services.postgres, namespace.schema)
    codec = Codec()
    async with BinanceSimulator() as sim, Database(services.postgres, schema=namespace.schema) as db:
        settings = sim_settings(sim.base_url)
        live = LiveExchange(settings, db, symbols=["BTCUSDT"])
        config = dataclasses.replace(TradingConfig(), max_hold=timedelta(seconds=1))
        desk = Desk(sim, db, live, codec, StoreSink(db, None, None), config, None, None)  # type: ignore[arg-type]
        desk.execution = ExecutionStage(codec, live, PgExecutionState(db), quiet_fill_after=0)
        desk.positions = desk.positions_stage()
        await desk.positions.start()
        try:
            yield desk
        finally:
            await live.stop()


def _closes_issued(outcomes: list[Outcome]) -> list[RiskVerdict]:
    return [event for outcome in outcomes for event in outcome.produce if isinstance(event, RiskVerdict)]


async def test_a_live_position_held_to_its_expiry_is_closed_by_one_order_at_the_exchange(desk):
    entry, position_id = await desk.open()
    assert {a.status for a in desk.sim.state.algo.values()} == {"NEW"}  # stop-loss and take-profit resting
    await asyncio.sleep(1.05)  # past its expiry (max_hold 1 s)
    await desk.sim.set_mark("BTCUSDT", "60321.7")  # the exchange closes at its own price

    # The positions stage does not close it itself: it issues a close order (once), the position stays open.
    outcomes = await desk.positions.on_clock(datetime.now(UTC))
    closes = _closes_issued(outcomes)
    assert len(closes) == 1
    close = closes[0]
    assert close.intent == "close" and close.close_position_id == position_id
    assert close.verdict_id == ids.expiry_verdict_id(position_id)
    assert any(isinstance(f, VerdictMade) for o in outcomes for f in o.persist)  # recorded (risk_verdicts, audit)
    await desk.persist(outcomes)
    assert (await desk.row(position_id))["status"] == "open"
    assert _closes_issued(await desk.positions.on_clock(datetime.now(UTC))) == []  # issued once
    # A restarted positions stage issues it again: the very same verdict (same id, same order).
    restarted = desk.positions_stage()
    await restarted.start()
    again = _closes_issued(await restarted.on_clock(datetime.now(UTC)))
    assert [v.verdict_id for v in again] == [close.verdict_id]

    exit_order = await desk.execute(close)
    assert exit_order.status == "filled" and exit_order.fill is not None
    # Delivered again (the same stage, and a restarted execution worker that had not written it): one order.
    again_order = await desk.execute(close)
    fresh = ExecutionStage(desk.codec, desk.live, PgExecutionState(desk.db), quiet_fill_after=0)
    await desk.db.execute("DELETE FROM orders WHERE order_id = %s", (exit_order.order_id,))  # killed before the write
    replayed = await desk.execute(again[0], stage=fresh)
    assert again_order.exchange_order_id == replayed.exchange_order_id == exit_order.exchange_order_id

    close_client_id = ids.client_order_id(ids.order_id(close.verdict_id))
    sim_exit = desk.sim.orders_for(close_client_id)
    assert len(sim_exit) == 1 and sim_exit[0].reduce_only and sim_exit[0].side == "SELL"
    close_posts = [
        r for r in desk.sim.requests_to("/fapi/v1/order", "POST") if r.params["newClientOrderId"] == close_client_id
    ]
    assert len(close_posts) == 1
    assert desk.sim.duplicates() == 0
    assert desk.sim.state.positions["BTCUSDT"].amount == 0
    assert {a.order_type: a.status for a in desk.sim.state.algo.values()} == {
        "STOP_MARKET": "CANCELED",
        "TAKE_PROFIT_MARKET": "CANCELED",
    }

    # The close order's fill closes the position: reason expiry, the exchange's price and fee.
    closed = await desk.to_positions(exit_order)
    assert [f.event.kind for f in closed] == ["expired"]
    sim_entry_trade, sim_exit_trade = desk.sim.state.trades[0], desk.sim.state.trades[-1]
    exit_price, exit_fee = Decimal(sim_exit_trade["price"]), Decimal(sim_exit_trade["commission"])
    entry_fee = Decimal(sim_entry_trade["commission"])
    assert exit_price == Decimal("60321.7") and exit_order.fill.fee == exit_fee > 0
    row = await desk.row(position_id)
    expected = money((exit_price - entry.fill.price) * entry.fill.quantity - entry_fee - exit_fee)  # type: ignore[union-attr]
    assert (row["status"], row["close_reason"], row["exit_price"]) == ("expired", "expiry", exit_price)
    assert row["total_fees_paid"] == entry_fee + exit_fee and row["realized_pnl"] == expected
    assert await desk.to_positions(replayed) == []  # the re-delivered fill closes nothing twice

    # The exchange and PostgreSQL agree: reconciliation finds nothing to halt on.
    report = await desk.live.reconcile(trigger="periodic", act=False)
    assert not report.halted and not report.unresolved, report.summary()
    print(
        f"\nexpiry close: {len(desk.sim.orders_for(close_client_id))} order at the exchange for 3 deliveries and 2"
        f" issues of the close; duplicates {desk.sim.duplicates()}; exit {exit_price}, fee {exit_fee},"
        f" realized {row['realized_pnl']}"
    )


async def test_an_expiry_close_refused_by_the_exchange_is_tried_again_with_a_new_id_once(desk):
    _, position_id = await desk.open()
    desk.positions.expiry_retry_after = 0
    await asyncio.sleep(1.05)
    first = _closes_issued(await desk.positions.on_clock(datetime.now(UTC)))[0]
    # Refused: -1021 on the create, its re-sync's retry, and the one re-send after asking (and its retry).
    desk.sim.inject("-1021", "/fapi/v1/order", method="POST", count=4)
    refused = await desk.execute(first)
    assert refused.status == "rejected" and refused.reject_reason == "EXCHANGE_REJECTED"
    assert await desk.to_positions(refused) == []
    assert desk.codec.decode(desk.codec.encode(refused), Order).exchange_order_id is None  # decodable downstream
    second = _closes_issued(await desk.positions.on_clock(datetime.now(UTC)))
    assert [v.verdict_id for v in second] == [ids.expiry_verdict_id(position_id, 1)]
    filled = await desk.execute(second[0])
    assert filled.status == "filled"
    assert [f.event.kind for f in await desk.to_positions(filled)] == ["expired"]
    assert desk.sim.order_creates() == 2 and desk.sim.duplicates() == 0  # the entry and one close
    assert _closes_issued(await desk.positions.on_clock(datetime.now(UTC))) == []


async def test_closing_one_of_two_positions_of_a_symbol_cancels_its_own_protection_only(desk):
    first, first_id = await desk.open()
    second, _ = await desk.open()
    await asyncio.sleep(1.05)
    closes = {v.close_position_id: v for v in _closes_issued(await desk.positions.on_clock(datetime.now(UTC)))}
    exit_order = await desk.execute(closes[first_id])
    assert exit_order.status == "filled"
    assert desk.sim.state.positions["BTCUSDT"].amount == second.fill.quantity  # type: ignore[union-attr]
    by_parent = {
        entry.client_order_id: sorted(
            a.status for a in desk.sim.state.algo.values() if a.client_algo_id in _protection_ids(entry.client_order_id)
        )
        for entry in (first, second)
    }
    assert by_parent == {first.client_order_id: ["CANCELED", "CANCELED"], second.client_order_id: ["NEW", "NEW"]}


def _protection_ids(entry_client_order_id: str) -> set[str]:
    from phoenix95.connectors.exchange.binance import protection_id

    return {protection_id(kind, entry_client_order_id) for kind in ("stop_loss", "take_profit")}


async def test_commissions_paid_in_bnb_are_counted_in_usdt_at_the_exchanges_bnb_price(desk):
    desk.sim.commission_asset = "BNB"
    desk.sim.asset_prices["BNBUSDT"] = BNB_PRICE
    entry, position_id = await desk.open()
    sim_entry = desk.sim.state.trades[0]
    assert sim_entry["commissionAsset"] == "BNB"
    entry_fee = money(Decimal(sim_entry["commission"]) * BNB_PRICE)
    assert entry.fill is not None and entry.fill.fee == entry_fee > Decimal("0.1")
    assert len(desk.sim.requests_to("/fapi/v1/ticker/price")) == 1

    # The stop fires at the exchange; its fill (in BNB too) closes the position with the fee in USDT.
    stop = next(a for a in desk.sim.state.algo.values() if a.order_type == "STOP_MARKET")
    await desk.sim.set_mark("BTCUSDT", stop.trigger_price - Decimal("3.2"))
    assert any(line.endswith("fired") for line in await desk.live.exchange.check_protection())
    closed = await desk.persist(await desk.positions.on_clock(datetime.now(UTC)))
    assert [f.event.kind for f in closed] == ["closed"]
    sim_exit = desk.sim.state.trades[-1]
    exit_fee = money(Decimal(sim_exit["commission"]) * BNB_PRICE)
    row = await desk.row(position_id)
    assert row["total_fees_paid"] == entry_fee + exit_fee
    expected = (Decimal(sim_exit["price"]) - entry.fill.price) * entry.fill.quantity - entry_fee - exit_fee
    assert row["realized_pnl"] == money(expected)
    fills = await desk.db.fetch(
        "SELECT commission, commission_asset, commission_usdt FROM exchange_fills ORDER BY trade_id"
    )
    assert fills == [
        (Decimal(sim_entry["commission"]), "BNB", entry_fee),
        (Decimal(sim_exit["commission"]), "BNB", exit_fee),
    ]


async def test_funding_reported_after_the_close_reaches_the_closed_positions_realized_pnl_once(desk):
    entry, position_id = await desk.open()
    opened_ms = int(entry.fill.filled_at.timestamp() * 1000)  # type: ignore[union-attr]
    stop = next(a for a in desk.sim.state.algo.values() if a.order_type == "STOP_MARKET")
    await desk.sim.set_mark("BTCUSDT", stop.trigger_price - Decimal("1"))
    await desk.live.exchange.check_protection()
    assert [f.event.kind for f in await desk.persist(await desk.positions.on_clock(datetime.now(UTC)))] == ["closed"]
    closed = await desk.row(position_id)
    realized_before = await desk.db.fetch("SELECT realized_pnl FROM paper_account")

    # Paid while the position was open, reported only now; and one paid after it closed (not its own).
    await desk.sim.pay_funding("BTCUSDT", "-0.75", at_ms=opened_ms + 200)
    await desk.sim.pay_funding(
        "BTCUSDT", "-2.50", at_ms=int((datetime.now(UTC) + timedelta(minutes=2)).timestamp() * 1000)
    )
    assert await desk.live.exchange.sync_funding() == 2
    outcomes = await desk.positions.on_clock(datetime.now(UTC))
    await desk.persist(outcomes)
    after = await desk.row(position_id)
    assert after["funding_paid"] == closed["funding_paid"] + Decimal("0.75")
    assert after["realized_pnl"] == closed["realized_pnl"] - Decimal("0.75")
    trade = await desk.db.fetch(
        "SELECT realized_pnl, total_pnl, funding_fee_amount FROM trades WHERE trade_id = %s", (entry.order_id,)
    )
    assert trade == [(after["realized_pnl"], after["realized_pnl"], after["funding_paid"])]
    account = await desk.db.fetch("SELECT realized_pnl FROM paper_account")
    assert account[0][0] == realized_before[0][0] - Decimal("0.75")
    assert desk.positions.realized == account[0][0]

    # Once: the same stage, a restarted one, and the very same batch written again change nothing.
    assert await desk.positions.on_clock(datetime.now(UTC)) == []
    restarted = desk.positions_stage()
    await restarted.start()
    assert await restarted.on_clock(datetime.now(UTC)) == []
    await desk.persist(outcomes)
    assert await desk.row(position_id) == after
    assert await desk.db.fetch("SELECT tran_id FROM position_exchange_funding") == [
        (int(desk.sim.state.income[0]["tranId"]),)
    ]


async def test_a_stop_fired_while_the_user_stream_is_down_is_polled_for_its_fill_and_closes_the_position(desk):
    entry, position_id = await desk.open()
    stream = asyncio.create_task(desk.live.stream.run())
    try:
        await asyncio.wait_for(desk.live.stream.connected.wait(), 30)
        await _until(lambda: bool(desk.sim._user_sockets))
        # The stream reports the stop's TRIGGERING (no order yet), then drops and stays down: the order it
        # became and its fills are never streamed.
        desk.sim.drop_user_stream_on_trigger = True
        desk.sim.user_stream_down = True
        stop = next(a for a in desk.sim.state.algo.values() if a.order_type == "STOP_MARKET")
        await desk.sim.set_mark("BTCUSDT", stop.trigger_price - Decimal("4.4"))
        assert not desk.sim._user_sockets
        await _until(lambda: desk.live.stream.polls >= 1 and not desk.live.stream.connected.is_set())
        closed: list[PositionChanged] = []

        async def settled() -> bool:
            closed.extend(await desk.persist(await desk.positions.on_clock(datetime.now(UTC))))
            return any(f.event.kind == "closed" for f in closed)

        await _until_async(settled)
    finally:
        stream.cancel()
    sim_exit = desk.sim.state.trades[-1]
    row = await desk.row(position_id)
    assert (row["status"], row["close_reason"]) == ("closed", "stop_loss")
    assert row["exit_price"] == Decimal(sim_exit["price"]) == stop.trigger_price - Decimal("4.4")
    entry_fee = Decimal(desk.sim.state.trades[0]["commission"])
    assert row["total_fees_paid"] == entry_fee + Decimal(sim_exit["commission"])
    assert {a.order_type: a.status for a in desk.sim.state.algo.values()} == {
        "STOP_MARKET": "FINISHED",
        "TAKE_PROFIT_MARKET": "CANCELED",
    }
    assert desk.live.stream.polls >= 1 and not desk.sim._user_sockets  # found by REST, not by the stream
    assert desk.sim.order_creates() == 2 and desk.sim.duplicates() == 0  # the entry and the stop's order
    assert desk.live.stream.events == 1  # the stream told only of the TRIGGERING
    assert len(desk.sim.orders_for(entry.client_order_id)) == 1


async def _until(check, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.05)


async def _until_async(check, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.05)
