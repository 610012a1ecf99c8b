"""A live exchange's numbers in the pipeline, against the simulator: the positions stage takes the
entry, the closing fill of a stop that fired at the exchange, the fees and the funding from the
exchange (exactly once, whatever is delivered again), and risk sizes and rounds with the exchange's
filters (exchangeInfo), rejecting an order below its minimum itself."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from phoenix95.agents.ports import InputRecord, OrderPlaced, Outcome, PositionChanged
from phoenix95.agents.positions import PositionStage
from phoenix95.agents.risk import RiskStage
from phoenix95.connectors.exchange.brackets import bundled_brackets
from phoenix95.connectors.exchange.check import check_account
from phoenix95.connectors.exchange.live import LiveExchange
from phoenix95.domain import ids
from phoenix95.domain.config import TradingConfig
from phoenix95.schemas.codec import Codec
from phoenix95.schemas.convert import analyze
from phoenix95.schemas.messages import Order, RiskVerdict
from phoenix95.storage.exchange_ledger import PgExchangeLedger
from phoenix95.storage.postgres import Database, migrate
from phoenix95.storage.readers import PgPortfolio, PgPositionStore
from phoenix95.storage.sink import StoreSink
from tests import factories
from tests.binance_sim import BinanceSimulator
from tests.exchange_helpers import StageDriver, approved_verdict, sim_settings

pytestmark = pytest.mark.integration


async def _until(check, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.05)


def _positions_stage(db: Database, codec: Codec, ledger: PgExchangeLedger) -> PositionStage:
    config, brackets = TradingConfig(), bundled_brackets()
    return PositionStage(codec, config, brackets, PgPositionStore(db, brackets, config.funding_interval), ledger=ledger)


async def _persist(sink: StoreSink, outcomes: list[Outcome]) -> list[PositionChanged]:
    assert not await sink.persist("positions", outcomes)
    return [fact for outcome in outcomes for fact in outcome.persist if isinstance(fact, PositionChanged)]


async def test_a_position_opened_and_closed_at_the_exchange_has_the_exchanges_fills_fees_and_funding_once(
    namespace, services
):
    await migrate(services.postgres, namespace.schema)
    codec = Codec()
    async with BinanceSimulator() as sim, Database(services.postgres, schema=namespace.schema) as db:
        settings = sim_settings(sim.base_url)
        live = LiveExchange(settings, db, symbols=["BTCUSDT"])
        stream = asyncio.create_task(live.stream.run())
        try:
            await asyncio.wait_for(live.stream.connected.wait(), 30)
            await _until(lambda: _true(bool(sim._user_sockets)))
            await sim.set_mark("BTCUSDT", "60012.3")  # the exchange fills away from the signal's price
            driver = StageDriver(live)
            verdict = approved_verdict("BTCUSDT", "60000")
            order = await driver.deliver(verdict)
            assert order.status == "filled" and order.fill is not None
            sim_entry = sim.state.trades[0]
            assert order.fill.price == Decimal(sim_entry["price"]) == Decimal("60012.3")
            assert order.fill.fee == Decimal(sim_entry["commission"]) > 0
            assert order.fill.trade_ids == (str(sim_entry["id"]),)
            assert codec.decode(codec.encode(order), Order).fill == order.fill  # the event carries them

            ledger = PgExchangeLedger(db, settings.exchange.kind)
            sink = StoreSink(db, None, None)
            record = InputRecord("p95.risk.verdicts", 0, 1, None, None, b"")
            assert not await sink.persist("execution", [Outcome(record, persist=[OrderPlaced(order, verdict)])])
            stage = _positions_stage(db, codec, ledger)
            await stage.start()
            order_record = InputRecord("p95.orders", 0, 1, None, b"BTCUSDT", codec.encode(order))
            opened = await _persist(sink, await stage.process([order_record]))
            assert [f.event.kind for f in opened] == ["opened"]
            position_id = ids.position_id(order.order_id)

            await sim.pay_funding("BTCUSDT", "-1.25")  # the position paid 1.25 USDT of funding
            await _until(_income_count(db))
            stop = next(a for a in sim.state.algo.values() if a.order_type == "STOP_MARKET")
            below = stop.trigger_price - Decimal("7.5")
            # The feed's mark price below the stop: the paper model would close here; the exchange does.
            price = factories.price(symbol="BTCUSDT", value=below, mark_price=below, at=datetime.now(UTC))
            marked = await _persist(
                sink,
                await stage.process([InputRecord("p95.market.prices", 0, 2, None, b"BTCUSDT", codec.encode(price))]),
            )
            assert all(f.position.is_open for f in marked)
            await sim.set_mark("BTCUSDT", below)  # the stop fires at the exchange
            await _until(_tagged_fills(db))
            sim_exit = sim.state.trades[-1]

            settled = await _persist(sink, await stage.on_clock(datetime.now(UTC)))
            kinds = [f.event.kind for f in settled]
            assert "funding" in kinds and kinds[-1] == "closed", kinds
            assert position_id not in stage.open

            row = (
                await db.fetch(
                    "SELECT entry_price, exit_price, funding_paid, total_fees_paid, realized_pnl, status, close_reason"
                    " FROM positions WHERE position_id = %s",
                    (position_id,),
                )
            )[0]
            entry_fee, exit_fee = Decimal(sim_entry["commission"]), Decimal(sim_exit["commission"])
            exit_price = Decimal(sim_exit["price"])
            expected = (exit_price - Decimal("60012.3")) * order.quantity - entry_fee - exit_fee - Decimal("1.25")
            assert row[0] == Decimal("60012.3") and row[1] == exit_price == below
            assert row[2] == Decimal("1.25")
            assert row[4] == expected.quantize(Decimal("0.00000001"))
            assert row[5] == "closed" and row[6] == "stop_loss"
            trade = (
                await db.fetch("SELECT exit_price, realized_pnl FROM trades WHERE order_id = %s", (order.order_id,))
            )[0]
            assert trade == (exit_price, row[4])
            print(
                f"\nexchange numbers in PostgreSQL: entry {row[0]}, exit {row[1]}, fees {entry_fee} + {exit_fee},"
                f" funding {row[2]}, realized {row[4]}"
            )

            # Delivered again: the same stage, and a restarted one - nothing changes.
            assert not await stage.on_clock(datetime.now(UTC))
            restarted = _positions_stage(db, codec, ledger)
            await restarted.start()
            assert position_id not in restarted.open
            again = await _persist(sink, await restarted.process([order_record]))
            again += await _persist(sink, await restarted.on_clock(datetime.now(UTC)))
            assert again == []
            after = (
                await db.fetch(
                    "SELECT entry_price, exit_price, funding_paid, total_fees_paid, realized_pnl, status, close_reason"
                    " FROM positions WHERE position_id = %s",
                    (position_id,),
                )
            )[0]
            assert after == row
            assert (await db.fetch("SELECT COUNT(*) FROM position_exchange_funding"))[0][0] == 1
            assert (await db.fetch("SELECT COUNT(*) FROM positions"))[0][0] == 1
        finally:
            stream.cancel()
            await live.stop()


async def _true(value: bool) -> bool:
    return value


def _income_count(db: Database):
    async def check() -> bool:
        return (await db.fetch("SELECT COUNT(*) FROM exchange_income WHERE income_type = 'FUNDING_FEE'"))[0][0] > 0

    return check


def _tagged_fills(db: Database):
    async def check() -> bool:
        rows = await db.fetch("SELECT COUNT(*) FROM exchange_fills WHERE client_order_id LIKE 'p95-sl-%%'")
        return rows[0][0] > 0

    return check


async def test_risk_rounds_with_the_exchanges_filters_and_rejects_below_its_minimum_itself(
    namespace, services, monkeypatch
):
    from tests.binance_sim import server

    # An unusual symbol at the exchange: quantity steps of 0.5, prices on a 0.25 grid, 500 USDT minimum
    # (the bundled rules say steps of 1, ticks of 0.01, 5 USDT).
    monkeypatch.setitem(
        server.SYMBOLS,
        "SOLUSDT",
        {"tick": "0.25", "step": "0.5", "min_qty": "0.5", "min_notional": "500", "mark": "150"},
    )
    await migrate(services.postgres, namespace.schema)
    codec = Codec()
    async with BinanceSimulator() as sim, Database(services.postgres, schema=namespace.schema) as db:
        settings = sim_settings(sim.base_url)
        live = LiveExchange(settings, db, symbols=["SOLUSDT"])
        try:
            check = await check_account(live.exchange)  # `p95 exchange check`, and the execution worker's start
            assert check.fatal is None and check.symbol_filters
        finally:
            await live.stop()
        ledger = PgExchangeLedger(db, settings.exchange.kind)
        config, brackets = TradingConfig(), bundled_brackets()
        portfolio = PgPortfolio(db, config.starting_equity, brackets, config.funding_interval)
        stage = RiskStage(codec, config, brackets, portfolio, symbol_rules=ledger)
        await stage.start()

        async def decide(price: str, final_confidence: str | None = None) -> RiskVerdict:
            now = datetime.now(UTC)
            signal = factories.signal(symbol="SOLUSDT", price=price, confidence="0.9", rsi="40", macd="12", at=now)
            analysis = analyze(signal)
            if final_confidence is not None:  # a small edge: Kelly sizes a small order
                analysis = analysis.model_copy(update={"final_confidence": Decimal(final_confidence)})
            tick = factories.price(symbol="SOLUSDT", value=price, at=now)
            records = [
                InputRecord("p95.market.prices", 0, 1, None, b"SOLUSDT", codec.encode(tick)),
                InputRecord("p95.analysis", 0, 1, None, b"SOLUSDT", codec.encode(analysis)),
            ]
            outcomes = await stage.process(records)
            verdicts = [e for o in outcomes for e in o.produce if isinstance(e, RiskVerdict)]
            assert len(verdicts) == 1
            return verdicts[0]

        approved = await decide("150.13")
        assert approved.approved and approved.plan is not None, approved.reasons
        plan = approved.plan
        assert plan.quantity % Decimal("0.5") == 0 and plan.quantity % 1 != 0  # off the bundled grid of 1
        for price in (plan.stop_loss_price, plan.take_profit_price):
            assert price % Decimal("0.25") == 0, price
        print(
            f"\nrisk on the exchange's grid: quantity {plan.quantity}, stop {plan.stop_loss_price}, target {plan.take_profit_price}"
        )

        small = await decide("150.13", "0.503")  # 1.5 SOL: 225 USDT, under the exchange's 500 minimum
        assert not small.approved
        assert "BELOW_EXCHANGE_MINIMUM" in small.reasons, small.reasons
        assert any("500" in d for d in small.details), small.details
        assert sim.order_creates() == 0  # nothing reached the exchange
