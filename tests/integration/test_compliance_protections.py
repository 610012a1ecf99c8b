"""The compliance monitor on the real workers: a falling price path hits the stop-loss of two XRPUSDT
positions in a row, the STOPLOSS_GUARD locks the symbol (PostgreSQL row, audit entry with the
figures, `p95 state`), the next signal is rejected with the reason code, and the lock still holds
after the risk and compliance workers are killed and restarted."""

from __future__ import annotations

import asyncio
import json
import signal
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from phoenix95.cli.main import app
from tests import factories
from tests.integration.test_trading_state import now, publish_price, publish_signal, verdict_of, wait_row
from tests.pipeline import Pipeline

pytestmark = pytest.mark.integration

STAGES = ["analysis", "risk", "execution", "positions", "compliance"]


def test_two_stop_losses_in_a_row_lock_the_symbol_and_the_lock_survives_a_restart(namespace, services):
    ns = replace(
        namespace,
        env={
            **namespace.env,
            "P95_COMPLIANCE__STOPLOSS_GUARD_COUNT": "2",
            "P95_COMPLIANCE__STOPLOSS_GUARD_LOCK_MIN": "120",
            "P95_COMPLIANCE__DAILY_LOSS_LIMIT_PCT": "0",
            "P95_COMPLIANCE__MAX_DRAWDOWN_PCT": "0",
            # a restarted worker on a busy machine lags: only the lock may reject the signal
            "P95_RISK__MAX_PIPELINE_LAG_S": "600",
        },
    )
    pipeline = Pipeline(ns, stages=list(STAGES))
    pipeline.start()
    try:
        asyncio.run(_scenario(pipeline))
    finally:
        pipeline.stop()


async def _stopped_out(pipeline: Pipeline) -> str:
    """Open a long at 1.19, then a price of 1.10 (below its 2 % stop) closes it at a loss."""
    await publish_price(pipeline)
    opening = await publish_signal(pipeline, "buy")
    decision, reasons, *_ = await verdict_of(pipeline, opening)
    assert (decision, reasons) == ("APPROVED", [])
    await publish_price(pipeline)
    (position_id,) = await wait_row(
        pipeline,
        "SELECT position_id::text FROM positions WHERE signal_id = %s",
        (opening.signal_id,),
        what="the long position open",
    )
    await pipeline.publish([factories.price(value="1.10", at=now(), namespace=pipeline.ns.name)])
    (close_reason,) = await wait_row(
        pipeline,
        "SELECT close_reason FROM positions WHERE position_id = %s AND status <> 'open'",
        (position_id,),
        what="the long position stopped out",
    )
    assert close_reason == "stop_loss"
    return position_id


async def _scenario(pipeline: Pipeline) -> None:
    await _stopped_out(pipeline)
    await _stopped_out(pipeline)
    reason, _until, locked_by, trip_id = await wait_row(
        pipeline,
        "SELECT reason, until, locked_by, trip_id FROM protection_locks WHERE symbol = 'XRPUSDT'",
        (),
        what="the STOPLOSS_GUARD lock on XRPUSDT",
    )
    assert (reason, locked_by) == ("STOPLOSS_GUARD", "compliance-monitor")
    async with pipeline.database() as db:
        [(actor, subject, payload)] = await db.fetch(
            "SELECT actor, subject, payload FROM audit_log WHERE action = 'protection'"
        )
        closes = await pipeline.count(db, "SELECT COUNT(*) FROM audit_log WHERE action = 'close'")
    entry = json.loads(payload)
    assert (actor, subject, entry["trip_id"]) == ("compliance-monitor", "STOPLOSS_GUARD", trip_id)
    assert entry["figures"]["stop_losses"] == "2" and entry["lock"]["symbol"] == "XRPUSDT"
    assert closes == 2
    print("protection trip as the audit log holds it:", payload)

    state = await asyncio.to_thread(CliRunner().invoke, app, ["state", "--json"])
    assert state.exit_code == 0, state.output
    [lock] = json.loads(state.stdout)["locks"]
    assert (lock["symbol"], lock["reason"]) == ("XRPUSDT", "STOPLOSS_GUARD")

    await asyncio.sleep(0.5)  # the risk stage reads the locks at most every 0.2 s
    blocked = await publish_signal(pipeline, "buy")
    decision, reasons, *_ = await verdict_of(pipeline, blocked)
    assert (decision, reasons) == ("REJECTED", ["STOPLOSS_GUARD"])

    for stage in ("risk", "compliance"):
        pipeline.workers.kill(stage, signal.SIGKILL)
    pipeline.workers.restart_dead()
    after_restart = await publish_signal(pipeline, "buy")
    decision, reasons, *_ = await verdict_of(pipeline, after_restart)
    assert (decision, reasons) == ("REJECTED", ["STOPLOSS_GUARD"])
    async with pipeline.database() as db:
        # the restarted monitor rebuilt its figures from the closed positions: no second trip
        assert await pipeline.count(db, "SELECT COUNT(*) FROM protection_trips") == 1
        assert await pipeline.count(db, "SELECT COUNT(*) FROM audit_log WHERE action = 'protection'") == 1

    # the day's report: both stop-outs, the trip, the rejections by their code, an unbroken chain
    result = await asyncio.to_thread(CliRunner().invoke, app, ["compliance", "report", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["trades"]["count"] == 2
    assert {t["close_reason"] for t in report["trades"]["items"]} == {"stop_loss"}
    assert report["rejections_by_reason"] == {"STOPLOSS_GUARD": 2}
    assert [(t["reason"], t["subject"]) for t in report["protections"]] == [("STOPLOSS_GUARD", "XRPUSDT")]
    assert report["audit"]["ok"] and report["audit"]["entries"] > 0
    assert list(report["limit_usage"]["peak_by_symbol"]) == ["XRPUSDT"]
