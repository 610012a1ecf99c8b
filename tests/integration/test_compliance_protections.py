"""The compliance monitor's protections on the real workers, one price path each.

- STOPLOSS_GUARD: two stop-losses in a row on XRPUSDT lock the symbol;
- DAILY_LOSS_LIMIT: one stop-loss costs more than 1 % of the start-of-day equity: HALTED;
- MAX_DRAWDOWN: a take-profit raises the equity peak, a stop-loss takes the equity 1 % below it: HALTED;
- COOLDOWN: a closed position locks its symbol for the cooldown;
- PRICE_COLLAR (risk stage, at decision time): a signal priced far from the last market price.

For each: the next signal is rejected with the reason code, the PostgreSQL rows (trip, lock or
trading state) and the audit entry with the figures are there, `p95 state` shows it, and the halt or
lock still holds after the risk and compliance workers are killed and restarted. The collar is a
check of each signal (its verdict is audited with the code) and leaves no state to survive a
restart. Every protection not under test is off, so only the one tested can reject the signal."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Awaitable, Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from typer.testing import CliRunner

from phoenix95.cli.main import app
from tests import factories
from tests.conftest import Namespace
from tests.integration.test_trading_state import now, publish_price, publish_signal, verdict_of, wait_row
from tests.pipeline import Pipeline

pytestmark = pytest.mark.integration

STAGES = ["analysis", "risk", "execution", "positions", "compliance"]
#: Every protection off; a test turns on the one it proves.
ALL_OFF = {
    "P95_COMPLIANCE__STOPLOSS_GUARD_COUNT": "0",
    "P95_COMPLIANCE__DAILY_LOSS_LIMIT_PCT": "0",
    "P95_COMPLIANCE__MAX_DRAWDOWN_PCT": "0",
    "P95_COMPLIANCE__COOLDOWN_MIN": "0",
    # a restarted worker on a busy machine lags: only the protection may reject the signal
    "P95_RISK__MAX_PIPELINE_LAG_S": "600",
}
#: The risk stage reads the trading state and the locks at most every 0.2 s.
CACHE_S = 0.5


def run(namespace: Namespace, scenario: Callable[[Pipeline], Awaitable[None]], **settings: str) -> None:
    """The five workers with every protection off but `settings`, running `scenario`."""
    ns = replace(namespace, env={**namespace.env, **ALL_OFF, **settings})
    pipeline = Pipeline(ns, stages=list(STAGES))
    pipeline.start()
    try:
        asyncio.run(scenario(pipeline))
    finally:
        pipeline.stop()


async def _round_trip(pipeline: Pipeline, exit_price: str, close_reason: str) -> str:
    """Open a long at 1.19 (filled by the next price), then a price of `exit_price` closes it."""
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
    await pipeline.publish([factories.price(value=exit_price, at=now(), namespace=pipeline.ns.name)])
    (reason,) = await wait_row(
        pipeline,
        "SELECT close_reason FROM positions WHERE position_id = %s AND status <> 'open'",
        (position_id,),
        what=f"the long position closed ({close_reason})",
    )
    assert reason == close_reason
    return position_id


async def _stopped_out(pipeline: Pipeline) -> str:
    """A long at 1.19; 1.10 is below its 2 % stop: closed at a loss."""
    return await _round_trip(pipeline, "1.10", "stop_loss")


async def _rejected_with(pipeline: Pipeline, reasons: list[str], *, price: str = "1.19") -> str:
    """A buy signal at `price` is rejected for `reasons` exactly; returns its verdict id."""
    blocked = factories.signal(action="buy", confidence="0.9", price=price, at=now())
    await pipeline.publish([blocked])
    decision, found, *_, verdict_id = await verdict_of(pipeline, blocked)
    assert (decision, found) == ("REJECTED", reasons)
    return str(verdict_id)


async def _restart_risk_and_compliance(pipeline: Pipeline) -> None:
    for stage in ("risk", "compliance"):
        pipeline.workers.kill(stage, signal.SIGKILL)
    await asyncio.to_thread(pipeline.workers.restart_dead)


async def _trip_audited(pipeline: Pipeline, reason: str) -> tuple[str, dict[str, Any]]:
    """The one `protection_trips` row of `reason` and its audit entry (with the figures)."""
    (trip_id,) = await wait_row(
        pipeline, "SELECT trip_id FROM protection_trips WHERE reason = %s", (reason,), what=f"the {reason} trip"
    )
    async with pipeline.database() as db:
        [(actor, payload)] = await db.fetch(
            "SELECT actor, payload FROM audit_log WHERE action = 'protection' AND subject = %s", (reason,)
        )
    entry = json.loads(payload)
    assert (actor, entry["trip_id"]) == ("compliance-monitor", trip_id)
    print(f"{reason} trip as the audit log holds it:", payload)
    return trip_id, entry


async def _state() -> dict[str, Any]:
    result = await asyncio.to_thread(CliRunner().invoke, app, ["state", "--json"])
    assert result.exit_code == 0, result.output
    state: dict[str, Any] = json.loads(result.stdout)
    return state


async def _one_trip_after_restart(pipeline: Pipeline) -> None:
    """The restarted monitor rebuilt its figures from the closed positions: no second trip."""
    async with pipeline.database() as db:
        assert await pipeline.count(db, "SELECT COUNT(*) FROM protection_trips") == 1
        assert await pipeline.count(db, "SELECT COUNT(*) FROM audit_log WHERE action = 'protection'") == 1


# -- STOPLOSS_GUARD -----------------------------------------------------------------------------------


def test_two_stop_losses_in_a_row_lock_the_symbol_and_the_lock_survives_a_restart(namespace, services):
    run(
        namespace,
        _stoploss_guard,
        P95_COMPLIANCE__STOPLOSS_GUARD_COUNT="2",
        P95_COMPLIANCE__STOPLOSS_GUARD_LOCK_MIN="120",
    )


async def _stoploss_guard(pipeline: Pipeline) -> None:
    await _stopped_out(pipeline)
    await _stopped_out(pipeline)
    reason, _until, locked_by, trip_id = await wait_row(
        pipeline,
        "SELECT reason, until, locked_by, trip_id FROM protection_locks WHERE symbol = 'XRPUSDT'",
        (),
        what="the STOPLOSS_GUARD lock on XRPUSDT",
    )
    assert (reason, locked_by) == ("STOPLOSS_GUARD", "compliance-monitor")
    audited_trip, entry = await _trip_audited(pipeline, "STOPLOSS_GUARD")
    assert audited_trip == trip_id
    assert entry["figures"]["stop_losses"] == "2" and entry["lock"]["symbol"] == "XRPUSDT"
    async with pipeline.database() as db:
        assert await pipeline.count(db, "SELECT COUNT(*) FROM audit_log WHERE action = 'close'") == 2

    shown = await _state()
    [lock] = shown["locks"]
    assert (lock["symbol"], lock["reason"]) == ("XRPUSDT", "STOPLOSS_GUARD")
    # the monitor's book figures, published when the guard tripped
    figures = shown["figures"]
    assert figures["stop_loss_streaks"] == {"*": 2, "XRPUSDT": 2}
    assert Decimal(figures["realized_pnl"]) < 0 and (figures["exposure"], figures["total_exposure"]) == ({}, "0")

    await asyncio.sleep(CACHE_S)
    await _rejected_with(pipeline, ["STOPLOSS_GUARD"])
    await _restart_risk_and_compliance(pipeline)
    await _rejected_with(pipeline, ["STOPLOSS_GUARD"])
    await _one_trip_after_restart(pipeline)

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


# -- DAILY_LOSS_LIMIT and MAX_DRAWDOWN: HALTED through the path of `p95 halt` --------------------------


async def _halted_by(pipeline: Pipeline, reason: str) -> dict[str, Any]:
    """The trading state HALTED by the monitor for `reason`, with its audit entries; the next signal
    is rejected, before and after a restart. Returns the trip's figures."""
    state_reason, updated_by = await wait_row(
        pipeline,
        "SELECT reason, updated_by FROM trading_state WHERE state = 'HALTED'",
        (),
        what=f"HALTED by {reason}",
    )
    assert state_reason.startswith(f"{reason}: ") and updated_by == "compliance-monitor"
    trip_id, entry = await _trip_audited(pipeline, reason)
    assert entry["halt"] is True and "lock" not in entry
    async with pipeline.database() as db:
        [(details,)] = await db.fetch(
            """SELECT payload::jsonb->'details' FROM audit_log
                WHERE action = 'trading_state' AND actor = 'compliance-monitor' AND subject = 'HALTED'"""
        )
    assert details["trip_id"] == trip_id

    shown = await _state()
    assert (shown["state"], shown["reason"]) == ("HALTED", state_reason)

    await asyncio.sleep(CACHE_S)
    await _rejected_with(pipeline, ["TRADING_HALTED"])
    await _restart_risk_and_compliance(pipeline)
    await _rejected_with(pipeline, ["TRADING_HALTED"])
    await _one_trip_after_restart(pipeline)
    figures: dict[str, Any] = entry["figures"]
    return figures


def test_a_day_loss_over_the_limit_halts_trading_and_the_halt_survives_a_restart(namespace, services):
    run(namespace, _daily_loss_limit, P95_COMPLIANCE__DAILY_LOSS_LIMIT_PCT="1")


async def _daily_loss_limit(pipeline: Pipeline) -> None:
    await _stopped_out(pipeline)
    figures = await _halted_by(pipeline, "DAILY_LOSS_LIMIT")
    assert float(figures["day_loss_pct"]) >= 1 and figures["limit_pct"] == "1"


def test_a_drawdown_from_the_equity_peak_halts_trading_and_the_halt_survives_a_restart(namespace, services):
    run(namespace, _max_drawdown, P95_COMPLIANCE__MAX_DRAWDOWN_PCT="1")


async def _max_drawdown(pipeline: Pipeline) -> None:
    await _round_trip(pipeline, "1.25", "take_profit")  # above its 2 % target: a new equity peak
    async with pipeline.database() as db:
        assert await pipeline.count(db, "SELECT COUNT(*) FROM protection_trips") == 0  # a win trips nothing
    await _stopped_out(pipeline)
    figures = await _halted_by(pipeline, "MAX_DRAWDOWN")
    starting = pipeline.settings.risk.trading_config().starting_equity
    assert float(figures["peak_equity"]) > float(starting)  # measured from the peak the win made
    assert float(figures["drawdown_pct"]) >= 1 and figures["limit_pct"] == "1"
    book = (await _state())["figures"]
    assert book["halted_for"] == ["MAX_DRAWDOWN"] and Decimal(book["drawdown_pct"]) >= 1
    assert Decimal(book["peak_equity"]) > starting


# -- COOLDOWN -------------------------------------------------------------------------------------------


def test_a_closed_position_locks_its_symbol_for_the_cooldown_and_the_lock_survives_a_restart(namespace, services):
    run(namespace, _cooldown, P95_COMPLIANCE__COOLDOWN_MIN="60")


async def _cooldown(pipeline: Pipeline) -> None:
    position_id = await _stopped_out(pipeline)
    reason, until, locked_by, trip_id, closed_at = await wait_row(
        pipeline,
        """SELECT l.reason, l.until, l.locked_by, l.trip_id, p.closed_at FROM protection_locks l, positions p
            WHERE l.symbol = 'XRPUSDT' AND p.position_id = %s""",
        (position_id,),
        what="the COOLDOWN lock on XRPUSDT",
    )
    assert (reason, locked_by) == ("COOLDOWN", "compliance-monitor")
    assert (until - closed_at).total_seconds() == 3600  # the cooldown counts from the close
    audited_trip, entry = await _trip_audited(pipeline, "COOLDOWN")
    assert audited_trip == trip_id and entry["lock"]["symbol"] == "XRPUSDT"
    assert entry["figures"] == {"symbol": "XRPUSDT", "cooldown_min": "60"}
    [lock] = (await _state())["locks"]
    assert (lock["symbol"], lock["reason"]) == ("XRPUSDT", "COOLDOWN")

    await asyncio.sleep(CACHE_S)
    await _rejected_with(pipeline, ["COOLDOWN"])
    await _restart_risk_and_compliance(pipeline)
    await _rejected_with(pipeline, ["COOLDOWN"])
    await _one_trip_after_restart(pipeline)


# -- PRICE_COLLAR: the risk stage, at decision time -------------------------------------------------------


async def _late_risk_worker_sees_the_price_before_the_signal(pipeline: Pipeline) -> None:
    """The risk worker is down while a price moves the market to 1.30 and a signal at 1.19 (846 bps
    away) passes analysis; restarted, it reads both in one batch and judges the signal against the
    price published before it, as a worker keeping up would (streams/direct.in_arrival_order)."""
    pipeline.workers.kill("risk", signal.SIGKILL)
    await pipeline.publish([factories.price(value="1.30", at=now(), namespace=pipeline.ns.name)])
    behind = factories.signal(action="buy", confidence="0.9", price="1.19", at=now())
    await pipeline.publish([behind])
    await wait_row(
        pipeline,
        "SELECT signal_id FROM signals WHERE signal_id = %s AND analysis_status = 'completed'",
        (behind.signal_id,),
        what="the signal analysed while the risk worker is down",
        down={"risk"},
    )
    await asyncio.to_thread(pipeline.workers.restart_dead)
    decision, reasons, *_ = await verdict_of(pipeline, behind)
    assert (decision, reasons) == ("REJECTED", ["PRICE_COLLAR"])


def test_a_signal_priced_far_from_the_market_is_rejected_by_the_price_collar(namespace, services):
    run(namespace, _price_collar, P95_COMPLIANCE__PRICE_COLLAR_BPS="100")


async def _price_collar(pipeline: Pipeline) -> None:
    await publish_price(pipeline)  # the last market price: 1.19
    await asyncio.sleep(CACHE_S)
    verdict_id = await _rejected_with(pipeline, ["PRICE_COLLAR"], price="1.30")  # 924 bps away
    async with pipeline.database() as db:
        [(payload,)] = await db.fetch(
            "SELECT payload FROM audit_log WHERE action = 'verdict' AND subject = %s", (verdict_id,)
        )
        [(details,)] = await db.fetch("SELECT details FROM risk_verdicts WHERE verdict_id = %s", (verdict_id,))
    assert json.loads(payload)["reasons"] == ["PRICE_COLLAR"]
    assert any("924 bps from the last market price 1.19 > 100 bps" in line for line in details), details
    within = factories.signal(action="buy", confidence="0.9", price="1.195", at=now())  # 42 bps: inside
    await pipeline.publish([within])
    decision, reasons, *_ = await verdict_of(pipeline, within)
    assert (decision, reasons) == ("APPROVED", [])

    await _late_risk_worker_sees_the_price_before_the_signal(pipeline)

    async with pipeline.database() as db:  # a signal's check, not a trip: no state, lock or trip rows
        assert await pipeline.count(db, "SELECT COUNT(*) FROM protection_trips") == 0
        assert await pipeline.count(db, "SELECT COUNT(*) FROM protection_locks") == 0
        [(state,)] = await db.fetch("SELECT state FROM trading_state")
    assert state == "ACTIVE"
