"""The kill switch behind `p95 halt --flatten`: HALTED, every open order cancelled at the exchange
connector, every open position closed at market with the reason `manual` and the actor.

The halt is written first (through the same path as `p95 halt`; it waits for any submission the
execution stage has in flight and every later one sees it, see PgExecutionState.submission). Then
one close verdict per open position goes to p95.risk.verdicts. Its id is derived from the position
(`ids.kill_switch_verdict_id`): the execution stage lets exactly these through a halt (they can only
close), the positions stage closes with the reason `manual`, and a second flatten issues the same
verdicts again, which close nothing twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from phoenix95.domain import ids
from phoenix95.domain.audit import Entry
from phoenix95.domain.positions import Position
from phoenix95.domain.trading_state import TradingState
from phoenix95.schemas.convert import close_verdict as build_close_verdict
from phoenix95.schemas.envelope import utc_now
from phoenix95.schemas.messages import RiskVerdict


@dataclass(frozen=True)
class FlattenResult:
    #: The time of the switch (the halt's transaction time, as `trading_state.updated_at` holds it).
    halted_at: datetime
    cancelled_orders: int
    #: Positions a close was issued for.
    closing: list[str]
    #: Positions still open, and exchange orders not yet turned into positions, when the wait ended.
    still_open: int
    unsettled_orders: int
    #: The halt acknowledged: the database clock just after HALTED was committed. No exchange order
    #: is created after it but the kill switch's own closes (orders submitted before it may still be
    #: written, and their positions are closed too).
    acknowledged_at: datetime | None = None


#: Orders the exchange filled that are neither a close nor a position yet (still on their way
#: through the execution and positions stages): a flatten waits for them, then closes what they opened.
_UNSETTLED = """SELECT COUNT(*) FROM paper_exchange_orders e
                 WHERE upper(e.status) = 'FILLED'
                   AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.client_order_id = e.client_order_id
                                     AND (o.intent = 'close'
                                          OR EXISTS (SELECT 1 FROM positions p WHERE p.trade_id = o.order_id)))"""


def close_verdict(position: Position, *, actor: str, reason: str, at: datetime) -> RiskVerdict:
    return build_close_verdict(
        position,
        verdict_id=ids.kill_switch_verdict_id(position.position_id),
        producer="kill-switch",
        detail=f"KILL_SWITCH: flatten by {actor}: {reason}",
        trading_state=TradingState.HALTED.value,
        at=at,
    )


async def flatten(settings: Any, *, actor: str, reason: str, wait: float = 60.0) -> FlattenResult:
    """Halt, cancel the open orders, and close every open position; then keep closing what orders
    submitted before the halt open, until nothing is open or `wait` seconds passed."""
    import asyncio
    import time

    from phoenix95.connectors.exchange.factory import build_exchange
    from phoenix95.storage import queries
    from phoenix95.storage.audit import record
    from phoenix95.storage.postgres import Database
    from phoenix95.storage.redis_state import RedisState
    from phoenix95.streams.wiring import brackets_for, trading_config

    config = trading_config(settings)
    brackets = brackets_for(settings)
    async with Database(settings.postgres_url(), schema=settings.postgres.db_schema) as db:
        halted_at = await queries.set_trading_state(
            db, TradingState.HALTED, reason=reason, actor=actor, details={"flatten": True}
        )
        acknowledged_at = (await db.fetch("SELECT clock_timestamp()"))[0][0]
        redis = RedisState.from_url(settings.redis_url(), prefix=settings.redis.prefix)
        try:
            await redis.set_trading_state(TradingState.HALTED.value, reason, halted_at)
        finally:
            await redis.close()
        exchange = build_exchange(settings, db, config)  # the connector the execution stage trades on
        cancelled = 0
        try:
            for symbol in sorted(config.allowed_symbols):
                cancelled += await exchange.cancel_all(symbol)
        finally:
            stop = getattr(exchange, "stop", None)
            if stop is not None:
                await stop()
        issued: dict[str, Position] = {}
        deadline = time.monotonic() + wait
        while True:
            positions = await queries.open_positions(db, brackets, config.funding_interval)
            fresh = [p for p in positions if p.position_id not in issued]
            if fresh:
                await _issue_closes(settings, db, fresh, actor=actor, reason=reason)
                issued.update((p.position_id, p) for p in fresh)
            unsettled = (await db.fetch(_UNSETTLED))[0][0]
            if (not positions and not unsettled) or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.25)
        await record(
            db,
            [
                Entry(
                    key=f"flatten:{uuid.uuid4()}",
                    actor=actor,
                    action="flatten",
                    subject=TradingState.HALTED.value,
                    payload={
                        "reason": reason,
                        "cancelled_orders": cancelled,
                        "closed": [
                            {"position_id": p.position_id, "symbol": p.symbol, "side": p.side, "quantity": p.quantity}
                            for p in issued.values()
                        ],
                        "still_open": len(positions),
                        "unsettled_orders": unsettled,
                    },
                    at=datetime.now(UTC),
                )
            ],
        )
    return FlattenResult(halted_at, cancelled, list(issued), len(positions), unsettled, acknowledged_at)


async def _issue_closes(settings: Any, db: Any, positions: list[Position], *, actor: str, reason: str) -> None:
    """Record the close verdicts (risk_verdicts rows and their audit entries, actor the person) and
    publish them to p95.risk.verdicts."""
    from phoenix95.agents.ports import InputRecord, Outcome, VerdictMade
    from phoenix95.schemas.codec import Codec
    from phoenix95.schemas.topics import Topics
    from phoenix95.storage.sink import StoreSink
    from phoenix95.streams.producer import EventProducer

    now = utc_now()
    verdicts = [close_verdict(p, actor=actor, reason=reason, at=now) for p in positions]
    source = InputRecord("kill-switch", 0, 0, now, None, b"")
    failures = await StoreSink(db, None, None).persist(
        actor, [Outcome(source, persist=[VerdictMade(v)]) for v in verdicts]
    )
    if failures:
        raise RuntimeError(f"could not record the close verdicts: {failures[0][1]}")
    producer = EventProducer(settings.kafka.bootstrap_servers, Topics(settings.namespace), Codec.for_settings(settings))
    await producer.start()
    try:
        await producer.publish(verdicts)
    finally:
        await producer.stop()
