"""The exchange's fees where they are easy to get wrong, against the simulator (the real connector and
ccxt, PostgreSQL): a position the exchange closed while the workers were down is closed by
reconciliation with the exchange's fill and commission (BNB converted at its price at the trade's time),
once; a commission whose BNB price cannot be read is retried and listed, and no close counts it as 0;
and a reduce-only close does not set the symbol's margin type and leverage up again."""

# ruff: noqa: F811  (`desk`, the fixture of test_exchange_closes, is imported and then requested by name)
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from prometheus_client import REGISTRY

from phoenix95.agents.execution import ExecutionStage
from phoenix95.connectors.exchange.live import LiveExchange
from phoenix95.connectors.exchange.reconcile import Report
from phoenix95.domain.values import money
from phoenix95.storage.readers import PgExecutionState
from tests.exchange_helpers import approved_verdict, sim_settings
from tests.integration.test_exchange_closes import Desk, _closes_issued, desk  # noqa: F401 (the fixture)

pytestmark = pytest.mark.integration

BNB_THEN = Decimal("612.34")  # BNB's price when the trades were made
BNB_NOW = Decimal("700.10")  # ...and when the workers are back


@asynccontextmanager
async def restarted(desk: Desk) -> AsyncIterator[tuple[LiveExchange, Report]]:
    """The execution worker started again: its start reconciliation (act) runs first."""
    live = LiveExchange(sim_settings(desk.sim.base_url), desk.db, symbols=["BTCUSDT"])
    try:
        yield live, await live.start()
    finally:
        await live.stop()


def kinds(report: Report) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for difference in report.differences:
        out.setdefault(difference.kind, []).append(difference.subject)
    return out


def unconverted() -> float | None:
    return REGISTRY.get_sample_value("p95_exchange_fees_unconverted")


async def closed_while_down(desk: Desk, *, funding: str | None = None) -> tuple[Decimal, Decimal, str, dict]:
    """Open a position (commissions in BNB), stop the workers, close it at the exchange by hand; BNB's
    price moves on. Returns (entry price, entry fee in USDT, position id, the exchange's closing trade)."""
    desk.sim.commission_asset = "BNB"
    desk.sim.asset_prices["BNBUSDT"] = BNB_THEN
    entry, position_id = await desk.open()
    assert entry.fill is not None
    entry_fee = money(Decimal(desk.sim.state.trades[0]["commission"]) * BNB_THEN)
    assert entry.fill.fee == entry_fee
    if funding is not None:
        await desk.sim.pay_funding("BTCUSDT", funding)
        assert await desk.live.exchange.sync_funding() == 1
        await desk.persist(await desk.positions.on_clock(datetime.now(UTC)))
        assert (await desk.row(position_id))["funding_paid"] == -Decimal(funding)
    await desk.live.stop()
    # -- the workers are down --
    await desk.sim.set_mark("BTCUSDT", "60480.5")
    assert await desk.sim.close_position("BTCUSDT") is not None
    desk.sim.asset_prices["BNBUSDT"] = BNB_NOW
    return entry.fill.price, entry_fee, position_id, desk.sim.state.trades[-1]


async def test_a_position_closed_while_down_is_closed_with_the_exchanges_fill_and_fees_once(desk):
    entry_price, entry_fee, position_id, exit_trade = await closed_while_down(desk, funding="-0.40")
    exit_fee = money(Decimal(exit_trade["commission"]) * BNB_THEN)  # at BNB's price then, not now
    exit_price = Decimal(exit_trade["price"])
    quantity = Decimal(exit_trade["qty"])
    expected = money((exit_price - entry_price) * quantity - entry_fee - exit_fee - Decimal("0.40"))

    async with restarted(desk) as (live, report):
        assert report.ok and not report.halted, report.summary()
        assert kinds(report)["position_closed_at_exchange"] == ["BTCUSDT"]
        row = await desk.row(position_id)
        assert (row["status"], row["close_reason"], row["exit_price"]) == ("closed", "EXCHANGE_CLOSED", exit_price)
        assert row["total_fees_paid"] == entry_fee + exit_fee
        assert row["funding_paid"] == Decimal("0.40")
        assert row["realized_pnl"] == expected
        trade = await desk.db.fetch(
            "SELECT realized_pnl, exit_price, close_reason, trading_fee_amount, position_closed_at IS NOT NULL"
            " FROM trades"
        )
        assert trade == [(expected, exit_price, "EXCHANGE_CLOSED", entry_fee + exit_fee, True)]
        assert (await desk.db.fetch("SELECT realized_pnl FROM paper_account"))[0][0] == expected
        # The adopted fill's BNB commission at BNB's 1-minute kline of the trade's time.
        fills = await desk.db.fetch(
            "SELECT commission_asset, commission_usdt FROM exchange_fills WHERE trade_id = %s", (exit_trade["id"],)
        )
        assert fills == [("BNB", exit_fee)]
        assert [r.params["symbol"] for r in desk.sim.requests_to("/fapi/v1/klines")] == ["BNBUSDT"]
        # Once: reconciliation again, and another restart (and a restarted positions stage), change nothing.
        again = await live.reconcile(trigger="manual", act=True)
        assert "position_closed_at_exchange" not in kinds(again) and again.ok
    async with restarted(desk) as (_, report):
        assert "position_closed_at_exchange" not in kinds(report) and report.ok
    positions = desk.positions_stage()
    await positions.start()
    assert await positions.on_clock(datetime.now(UTC)) == []
    assert await desk.row(position_id) == row
    assert (await desk.db.fetch("SELECT realized_pnl FROM paper_account"))[0][0] == expected
    assert desk.sim.order_creates() == 2 and desk.sim.duplicates() == 0  # the entry, and the close by hand


async def test_a_fee_whose_bnb_price_cannot_be_read_is_retried_listed_and_never_counted_as_zero(desk):
    entry_price, entry_fee, position_id, exit_trade = await closed_while_down(desk)
    desk.sim.prices_down = {"BNBUSDT"}  # neither the kline nor the ticker can be read
    async with restarted(desk) as (live, report):
        found = kinds(report)
        assert found["fee_unconverted"] == [f"BTCUSDT#{exit_trade['id']}"]
        # The position is not closed with a fee of 0: left open, and trading halts (fail closed).
        assert [d.kind for d in report.unresolved] == ["position_closed_at_exchange"]
        assert "not known in USDT" in report.unresolved[0].detail and report.halted
        assert (await desk.row(position_id))["status"] == "open"
        assert unconverted() == 1
        fills = await desk.db.fetch(
            "SELECT commission_usdt FROM exchange_fills WHERE trade_id = %s", (exit_trade["id"],)
        )
        assert fills == [(None,)]

        desk.sim.prices_down = set()  # BNB's price can be read again: the next reconciliation converts it
        report = await live.reconcile(trigger="manual", act=True)
        assert "fee_unconverted" not in kinds(report) and unconverted() == 0
        exit_fee = money(Decimal(exit_trade["commission"]) * BNB_THEN)
        row = await desk.row(position_id)
        assert row["status"] == "closed" and row["total_fees_paid"] == entry_fee + exit_fee
        exit_price = Decimal(exit_trade["price"])
        assert row["realized_pnl"] == money(
            (exit_price - entry_price) * Decimal(exit_trade["qty"]) - entry_fee - exit_fee
        )
        again = await live.reconcile(trigger="manual", act=True)
        assert not again.differences or "position_closed_at_exchange" not in kinds(again)
        assert await desk.row(position_id) == row


async def test_a_stop_fill_whose_bnb_price_cannot_be_read_closes_the_position_only_once_converted(desk):
    desk.sim.commission_asset = "BNB"
    desk.sim.asset_prices["BNBUSDT"] = BNB_THEN
    entry, position_id = await desk.open()
    assert entry.fill is not None
    entry_fee = money(Decimal(desk.sim.state.trades[0]["commission"]) * BNB_THEN)
    desk.sim.prices_down = {"BNBUSDT"}
    desk.live.exchange._asset_prices.clear()  # BNB's price read for the entry is cached for 10 s
    stop = next(a for a in desk.sim.state.algo.values() if a.order_type == "STOP_MARKET")
    await desk.sim.set_mark("BTCUSDT", stop.trigger_price - Decimal("2.5"))
    assert any(line.endswith("fired") for line in await desk.live.exchange.check_protection())
    exit_trade = desk.sim.state.trades[-1]
    # The stop's fill is recorded with its fee unknown in USDT: the positions stage waits, not closes at 0.
    waiting = await desk.persist(await desk.positions.on_clock(datetime.now(UTC)))
    assert [f.position.status for f in waiting] in ([], ["open"])
    assert (await desk.row(position_id))["status"] == "open"
    report = await desk.live.reconcile(trigger="periodic", act=False)
    assert kinds(report)["fee_unconverted"] == [f"BTCUSDT#{exit_trade['id']}"] and unconverted() == 1

    desk.sim.asset_prices["BNBUSDT"] = BNB_NOW
    desk.sim.prices_down = set()
    report = await desk.live.reconcile(trigger="periodic", act=False)
    assert "fee_unconverted" not in kinds(report) and unconverted() == 0
    closed = await desk.persist(await desk.positions.on_clock(datetime.now(UTC)))
    assert [f.event.kind for f in closed] == ["closed"]
    exit_fee = money(Decimal(exit_trade["commission"]) * BNB_THEN)  # the kline of the trade's minute
    row = await desk.row(position_id)
    assert (row["close_reason"], row["total_fees_paid"]) == ("stop_loss", entry_fee + exit_fee)
    expected = (Decimal(exit_trade["price"]) - entry.fill.price) * entry.fill.quantity - entry_fee - exit_fee
    assert row["realized_pnl"] == money(expected)
    assert not [
        f for f in await desk.persist(await desk.positions.on_clock(datetime.now(UTC))) if not f.position.is_open
    ]


async def test_a_reduce_only_close_does_not_set_the_margin_type_and_leverage_up_again(desk):
    def setups() -> tuple[int, int]:
        return len(desk.sim.requests_to("/fapi/v1/marginType")), len(desk.sim.requests_to("/fapi/v1/leverage"))

    _, position_id = await desk.open()
    assert setups() == (1, 1)
    # A restarted execution worker (nothing cached) closes the position at its expiry: no setup calls.
    live = LiveExchange(sim_settings(desk.sim.base_url), desk.db, symbols=["BTCUSDT"])
    try:
        fresh = ExecutionStage(desk.codec, live, PgExecutionState(desk.db), quiet_fill_after=0)
        await asyncio.sleep(1.05)  # past its expiry (max_hold 1 s)
        closes = _closes_issued(await desk.positions.on_clock(datetime.now(UTC)))
        assert [v.close_position_id for v in closes] == [position_id]
        exit_order = await desk.execute(closes[0], stage=fresh)
        assert exit_order.status == "filled"
        assert setups() == (1, 1)
        # A new entry on that worker does set the symbol up (the count is of real requests).
        entry = await desk.execute(approved_verdict("BTCUSDT", "60000"), stage=fresh)
        assert entry.status == "filled"
        assert setups() == (2, 2)
    finally:
        await live.stop()
