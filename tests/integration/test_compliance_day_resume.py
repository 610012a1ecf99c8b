"""DAILY_LOSS_LIMIT halts "until the next day or a manual resume": the monitor's clock resumes
trading once its trading day is over, audited, once; a manual halt or a MAX_DRAWDOWN halt stays."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from phoenix95.agents.compliance import ComplianceStage
from phoenix95.domain.protections import ProtectionConfig, Trip
from phoenix95.domain.trading_state import TradingState
from phoenix95.schemas.codec import Codec
from phoenix95.storage import queries
from phoenix95.storage.compliance import PgComplianceStore, apply_trip
from phoenix95.storage.postgres import Database, migrate

pytestmark = pytest.mark.integration


def trip(reason: str) -> Trip:
    return Trip(reason, datetime.now(UTC), f"{reason} figures", {"equity": "8900"}, halt=True)


async def state_and_audit(db: Database) -> tuple[str, str, list[tuple[str, str]]]:
    state, reason, _at = await queries.trading_state(db)
    rows = await db.fetch("SELECT actor, subject FROM audit_log WHERE action = 'trading_state' ORDER BY seq")
    return state.value, reason, [(r[0], r[1]) for r in rows]


def test_a_daily_loss_halt_ends_with_its_trading_day_once_and_other_halts_stay(services, namespace):
    async def run() -> None:
        await migrate(services.postgres, namespace.schema)
        async with Database(services.postgres, schema=namespace.schema) as db:
            stage = ComplianceStage(Codec(), ProtectionConfig(), Decimal(10000), PgComplianceStore(db))
            assert await apply_trip(db, "trip-day", trip("DAILY_LOSS_LIMIT"))
            # the same day: still HALTED
            assert await stage.on_clock(datetime.now(UTC)) == []
            assert (await state_and_audit(db))[0] == "HALTED"
            # the next day's first clock tick resumes, publishes one ControlEvent, audits one switch
            tomorrow = datetime.now(UTC) + timedelta(days=1)
            [outcome] = await stage.on_clock(tomorrow)
            [event] = outcome.produce
            assert (event.kind, event.state, event.actor) == ("trading_state", "ACTIVE", "compliance-monitor")
            state, reason, audit = await state_and_audit(db)
            assert state == "ACTIVE" and reason.startswith("DAILY_LOSS_LIMIT: a new trading day")
            assert audit == [("compliance-monitor", "HALTED"), ("compliance-monitor", "ACTIVE")]
            assert await stage.on_clock(tomorrow + timedelta(minutes=1)) == []  # once a day
            again = ComplianceStage(Codec(), ProtectionConfig(), Decimal(10000), PgComplianceStore(db))
            assert await again.on_clock(tomorrow) == []  # a restarted monitor: nothing twice
            assert len((await state_and_audit(db))[2]) == 2

            # a MAX_DRAWDOWN halt and a manual halt are not lifted by a new day
            assert await apply_trip(db, "trip-drawdown", trip("MAX_DRAWDOWN"))
            later = ComplianceStage(Codec(), ProtectionConfig(), Decimal(10000), PgComplianceStore(db))
            assert await later.on_clock(tomorrow + timedelta(days=1)) == []
            assert (await state_and_audit(db))[0] == "HALTED"
            await queries.set_trading_state(
                db, TradingState.HALTED, reason="DAILY_LOSS_LIMIT: typed by hand", actor="cli:ops"
            )
            manual = ComplianceStage(Codec(), ProtectionConfig(), Decimal(10000), PgComplianceStore(db))
            assert await manual.on_clock(tomorrow + timedelta(days=2)) == []
            assert (await state_and_audit(db))[:2] == ("HALTED", "DAILY_LOSS_LIMIT: typed by hand")

    asyncio.run(run())
