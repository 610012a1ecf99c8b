"""The trading state on the real pipeline (wall clock, as in live trading): `p95 halt` makes the risk
stage reject new signals and the execution stage refuse a verdict approved before the halt;
`p95 reduce` lets through only a signal that closes an opposite open position; `p95 resume` restores
normal trading. Every switch is in the PostgreSQL row, its Redis mirror and the audit log."""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from phoenix95.schemas.messages import Signal
from tests import factories
from tests.pipeline import Pipeline

pytestmark = pytest.mark.integration

#: The risk and execution stages read the state at most every 0.2 s (storage.readers._StateCache).
STATE_CACHE_S = 0.2
ACTOR = f"cli:{getpass.getuser()}"


def now() -> datetime:
    return datetime.now(UTC)


async def switch(command: str, reason: str) -> None:
    """`p95 halt | reduce | resume --reason REASON` (in a thread: the command runs its own event loop)."""
    from phoenix95.cli.main import app

    result = await asyncio.to_thread(CliRunner().invoke, app, [command, "--reason", reason])
    assert result.exit_code == 0, result.output
    assert reason in result.stderr


async def wait_row(
    pipeline: Pipeline, sql: str, params: Sequence[Any], *, what: str, down: Collection[str] = ()
) -> tuple[Any, ...]:
    found: list[tuple[Any, ...]] = []

    async def check(db) -> bool:
        found[:] = await db.fetch(sql, params)
        return bool(found)

    await pipeline.wait_for(check, timeout=90, what=what, down=down)
    return found[0]


async def verdict_of(pipeline: Pipeline, signal: Signal) -> tuple[Any, ...]:
    return await wait_row(
        pipeline,
        """SELECT decision, reasons, intent, close_position_id::text, trading_state, verdict_id::text
             FROM risk_verdicts WHERE signal_id = %s""",
        (signal.signal_id,),
        what=f"the verdict on {signal.signal_id}",
    )


async def order_of(pipeline: Pipeline, verdict_id: str) -> tuple[Any, ...]:
    return await wait_row(
        pipeline,
        "SELECT status, reject_reason, intent, close_position_id::text FROM orders WHERE verdict_id = %s",
        (verdict_id,),
        what=f"the order of verdict {verdict_id}",
    )


async def publish_signal(pipeline: Pipeline, action: str) -> Signal:
    # a strategy of its own: never a DUPLICATE_SIGNAL of an earlier one
    signal = factories.signal(action=action, confidence="0.9", at=now())
    await pipeline.publish([signal])
    return signal


async def publish_price(pipeline: Pipeline) -> None:
    """A fresh XRPUSDT price at entry: fills what waits for the next price, closes nothing."""
    await pipeline.publish([factories.price(value="1.19", at=now(), namespace=pipeline.ns.name)])


async def assert_state_everywhere(pipeline: Pipeline, redis_url: str, state: str, reason: str) -> None:
    """The PostgreSQL row, the Redis mirror and the newest audit log entry all say `state`."""
    async with pipeline.database() as db:
        [(pg_state, pg_reason, updated_by, updated_at)] = await db.fetch(
            "SELECT state, reason, updated_by, updated_at FROM trading_state"
        )
        actor, action, subject, details, at = (
            await db.fetch(
                """SELECT actor, action, subject, payload::jsonb - 'previous', at FROM audit_log
                    WHERE action = 'trading_state' ORDER BY seq DESC LIMIT 1"""
            )
        )[0]
    assert (pg_state, pg_reason, updated_by) == (state, reason, ACTOR)
    assert (actor, action, subject, details, at) == (
        ACTOR,
        "trading_state",
        state,
        {"reason": reason, "state": state},
        updated_at,
    )
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        mirror = client.hgetall(f"{pipeline.ns.redis_prefix}trading_state")
    finally:
        client.close()
    assert mirror == {"state": state, "reason": reason, "updated_at": updated_at.isoformat()}


def test_a_halt_rejects_new_signals_and_a_verdict_approved_before_it_never_becomes_an_order(namespace, services):
    # no execution worker yet: the verdict approved before the halt reaches execution only after it
    pipeline = Pipeline(namespace, stages=("analysis", "risk", "positions"))
    pipeline.start()
    try:
        asyncio.run(_halt_scenario(pipeline, services.redis))
    finally:
        pipeline.stop()


async def _halt_scenario(pipeline: Pipeline, redis_url: str) -> None:
    await publish_price(pipeline)
    before = await publish_signal(pipeline, "buy")
    decision, reasons, _, _, state, approved_id = await verdict_of(pipeline, before)
    assert (decision, reasons, state) == ("APPROVED", [], "ACTIVE")

    await switch("halt", "halt test")
    await assert_state_everywhere(pipeline, redis_url, "HALTED", "halt test")
    await asyncio.sleep(2 * STATE_CACHE_S)

    after = await publish_signal(pipeline, "buy")
    decision, reasons, _, _, state, _ = await verdict_of(pipeline, after)
    assert (decision, reasons, state) == ("REJECTED", ["TRADING_HALTED"], "HALTED")

    pipeline.workers.stages.append("execution")
    pipeline.workers.start("execution")
    await publish_price(pipeline)
    status, reject_reason, _, _ = await order_of(pipeline, approved_id)
    assert (status, reject_reason) == ("rejected", "TRADING_HALTED")

    async def execution_done(db) -> bool:
        return await pipeline.caught_up(("execution",))

    await pipeline.wait_for(execution_done, what="the execution stage at the end of its inputs")
    async with pipeline.database() as db:
        assert await pipeline.count(db, "SELECT COUNT(*) FROM orders") == 1  # a rejected verdict makes none
        assert await pipeline.count(db, "SELECT COUNT(*) FROM paper_exchange_orders") == 0  # nothing submitted
        assert await pipeline.count(db, "SELECT COUNT(*) FROM positions") == 0


def test_reducing_lets_only_a_closing_signal_through_and_resume_restores_trading(namespace, services):
    pipeline = Pipeline(namespace)
    pipeline.start()
    try:
        asyncio.run(_reduce_scenario(pipeline, services.redis))
    finally:
        pipeline.stop()


async def _reduce_scenario(pipeline: Pipeline, redis_url: str) -> None:
    await publish_price(pipeline)
    opening = await publish_signal(pipeline, "buy")
    decision, _, intent, _, _, verdict_id = await verdict_of(pipeline, opening)
    assert (decision, intent) == ("APPROVED", "open")
    await publish_price(pipeline)
    (long_id,) = await wait_row(
        pipeline,
        "SELECT position_id::text FROM positions WHERE signal_id = %s AND status = 'open'",
        (opening.signal_id,),
        what="the long position open",
    )

    await switch("reduce", "reduce test")
    await assert_state_everywhere(pipeline, redis_url, "REDUCING", "reduce test")
    await asyncio.sleep(2 * STATE_CACHE_S)

    adding = await publish_signal(pipeline, "buy")  # would grow the exposure
    decision, reasons, _, _, state, _ = await verdict_of(pipeline, adding)
    assert (decision, reasons, state) == ("REJECTED", ["TRADING_REDUCING"], "REDUCING")

    closing = await publish_signal(pipeline, "sell")  # against the open long: closes it
    decision, reasons, intent, close_id, state, close_verdict_id = await verdict_of(pipeline, closing)
    assert (decision, reasons, intent, close_id, state) == ("APPROVED", [], "close", long_id, "REDUCING")
    await publish_price(pipeline)
    assert await order_of(pipeline, close_verdict_id) == ("filled", None, "close", long_id)
    (close_reason,) = await wait_row(
        pipeline,
        "SELECT close_reason FROM positions WHERE position_id = %s AND status = 'closed'",
        (long_id,),
        what="the long position closed by the reducing signal",
    )
    assert close_reason == "reduce_signal"

    await switch("resume", "resume test")
    await assert_state_everywhere(pipeline, redis_url, "ACTIVE", "resume test")
    await asyncio.sleep(2 * STATE_CACHE_S)

    reopening = await publish_signal(pipeline, "buy")
    decision, reasons, intent, _, state, reopen_verdict_id = await verdict_of(pipeline, reopening)
    assert (decision, reasons, intent, state) == ("APPROVED", [], "open", "ACTIVE")
    await publish_price(pipeline)
    assert (await order_of(pipeline, reopen_verdict_id))[:3] == ("filled", None, "open")
    await wait_row(
        pipeline,
        "SELECT 1 FROM positions WHERE signal_id = %s AND status = 'open'",
        (reopening.signal_id,),
        what="a new position after the resume",
    )
    async with pipeline.database() as db:
        audit = await db.fetch(
            "SELECT subject, payload::jsonb->>'reason' FROM audit_log WHERE action = 'trading_state' ORDER BY seq"
        )
        assert await pipeline.count(db, "SELECT COUNT(*) FROM orders") == 3  # open, close, open again
    assert audit == [("REDUCING", "reduce test"), ("ACTIVE", "resume test")]
    assert verdict_id != close_verdict_id != reopen_verdict_id
