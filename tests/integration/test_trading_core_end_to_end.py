"""The trading core on the real pipeline with the real XRPUSDT candles: positions open and close by
stop-loss, take-profit and expiry, and every order, fill and close in PostgreSQL is exactly what the
domain functions compute for the same input (the in-process engine runs them directly)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from decimal import Decimal

import pytest

from phoenix95.connectors.market_data import bundled_candle_events, bundled_funding
from phoenix95.domain.funding import FundingSchedule
from phoenix95.replay.digest import close_line, digest, lines_of, order_line
from phoenix95.replay.engine import InProcessEngine
from phoenix95.schemas.convert import tick_of
from phoenix95.settings import Settings
from phoenix95.streams.wiring import brackets_for, trading_config
from tests import factories
from tests.pipeline import Pipeline

pytestmark = pytest.mark.integration

OVERRIDES = json.dumps({"XRPUSDT": {"max_hold": 12 * 3600}})  # 12 h: the XRP data then has expiries too


def inputs(namespace: str):
    prices = bundled_candle_events("XRPUSDT", "5m", namespace=namespace)
    start = prices[0].ts_event
    signals = []
    for index, hours in enumerate(range(0, 150, 3)):
        at = start + timedelta(hours=hours, minutes=1)
        reference = [p for p in prices if p.ts_event <= at][-1].price if hours else prices[0].price
        signals.append(
            factories.signal(
                price=reference,
                at=at,
                action="buy" if index % 2 else "sell",
                confidence="0.3" if index % 7 == 3 else "0.9",
                signal_id=f"{namespace}-{index:03d}",
            )
        )
    return prices, signals


def test_pipeline_closes_by_stop_take_profit_and_expiry_exactly_as_the_domain_computes(namespace, monkeypatch):
    for key, value in (("P95_RISK__CLOCK", "event"), ("P95_RISK__OVERRIDES", OVERRIDES)):
        monkeypatch.setenv(key, value)
        namespace.env[key] = value
    settings = Settings()
    prices, signals = inputs(namespace.name)
    config = trading_config(settings)
    engine = InProcessEngine(
        config,
        brackets_for(settings),
        funding=FundingSchedule(config.default_funding_rate, bundled_funding()),
        protections=settings.compliance.protection_config(),  # as the event-clock risk stage applies them
    )
    expected = engine.run([*[tick_of(p) for p in prices], *signals])
    reasons = {p.close_reason for p in expected.closed}
    assert {"stop_loss", "take_profit", "expiry"} <= reasons, reasons

    pipeline = Pipeline(namespace)
    pipeline.start()
    try:
        found = asyncio.run(_run(pipeline, prices, signals))
    finally:
        pipeline.stop()
    expected_lines = lines_of(expected.orders, expected.closed)
    closes: dict[str, int] = {}
    for position in expected.closed:
        closes[str(position.close_reason)] = closes.get(str(position.close_reason), 0) + 1
    print(
        f"\ntrading core: {len(signals)} signals over {len(prices)} XRPUSDT candles -> "
        f"{len(expected.orders)} orders, {len(expected.closed)} closes {closes}; pipeline lines {len(found)}"
    )
    assert sorted(found) == sorted(expected_lines)
    assert digest(found) == digest(expected_lines)


async def _run(pipeline: Pipeline, prices, signals) -> list[str]:
    timeline = sorted([*prices, *signals], key=lambda e: (e.ts_event, 0 if e.SCHEMA_NAME.endswith("Signal") else 1))
    for index in range(0, len(timeline), 400):
        await pipeline.publish(timeline[index : index + 400])

    async def settled(db) -> bool:
        verdicts = await pipeline.count(db, "SELECT COUNT(*) FROM risk_verdicts")
        approved = await pipeline.count(db, "SELECT COUNT(*) FROM risk_verdicts WHERE decision = 'APPROVED'")
        orders = await pipeline.count(db, "SELECT COUNT(*) FROM orders")
        filled = await pipeline.count(db, "SELECT COUNT(*) FROM orders WHERE status = 'filled' AND intent = 'open'")
        positions = await pipeline.count(db, "SELECT COUNT(*) FROM positions")
        return (
            verdicts == len(signals)
            and orders == approved
            and positions == filled
            and await pipeline.caught_up(("execution", "positions"))
        )

    await pipeline.wait_for(settled, timeout=180, what="every signal traded and every price applied")
    async with pipeline.database() as db:
        orders = await db.fetch(
            """SELECT order_id::text, client_order_id, symbol, side, intent, quantity, status, fill_price, fill_quantity,
                      fee, filled_at FROM orders"""
        )
        closes = await db.fetch(
            "SELECT position_id::text, status, close_reason, exit_price, closed_at, realized_pnl FROM positions WHERE status <> 'open'"
        )
        trades = await db.fetch(
            """SELECT t.exit_price, t.realized_pnl, p.exit_price, p.realized_pnl, t.liquidation_price, p.liquidation_price
                 FROM trades t JOIN positions p ON p.trade_id = t.trade_id WHERE p.status <> 'open'"""
        )
    for trade_exit, trade_pnl, position_exit, position_pnl, _, _ in trades:
        assert trade_exit == position_exit and trade_pnl == position_pnl
    assert all(isinstance(row[5], Decimal) for row in orders)
    return [order_line(*row) for row in orders] + [close_line(*row) for row in closes]
