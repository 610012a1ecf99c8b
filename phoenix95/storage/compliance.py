"""The compliance monitor's PostgreSQL side: applying a trip (the trading state through the same
path as `p95 halt`, or a symbol lock), the locks in force, and the history it recovers from.

A trip is applied in one transaction with its audit entry; its id is derived from what caused it,
so a re-delivered position event applies nothing twice.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from phoenix95.domain.audit import Entry
from phoenix95.domain.protections import Trip
from phoenix95.domain.risk import RiskReason, SymbolLock
from phoenix95.domain.trading_state import TradingState
from phoenix95.storage.audit import append, lock_chain
from phoenix95.storage.postgres import Database
from phoenix95.storage.queries import switch_trading_state

ACTOR = "compliance-monitor"


async def apply_trip(db: Database, trip_id: str, trip: Trip, *, actor: str = ACTOR) -> bool:
    """Halt trading or lock the symbol, record the trip and audit it with its figures. Returns
    False when this trip was applied already (a re-delivery)."""
    async with db.pool.connection() as connection, connection.transaction(), connection.cursor() as cursor:
        await lock_chain(cursor)  # also serializes two monitors applying the same trip
        await cursor.execute("SELECT 1 FROM protection_trips WHERE trip_id = %s", (trip_id,))
        if await cursor.fetchone():
            return False
        subject = trip.lock.symbol if trip.lock is not None else None
        await cursor.execute(
            "INSERT INTO protection_trips (trip_id, reason, at, subject, message, figures) VALUES (%s, %s, %s, %s, %s, %s)",
            (trip_id, trip.reason, trip.at, subject, trip.message, json.dumps(trip.figures)),
        )
        if trip.halt:
            await switch_trading_state(
                cursor,
                TradingState.HALTED,
                reason=f"{trip.reason}: {trip.message}",
                actor=actor,
                details={"trip_id": trip_id, **trip.figures},
                key=f"trading_state:{trip_id}",
            )
        if trip.lock is not None:
            await cursor.execute(
                """INSERT INTO protection_locks (symbol, reason, until, detail, locked_by, trip_id)
                   VALUES (%s, %s, %s, %s, %s, %s)
                   ON CONFLICT (symbol) DO UPDATE SET reason = EXCLUDED.reason, until = EXCLUDED.until,
                       detail = EXCLUDED.detail, locked_by = EXCLUDED.locked_by, locked_at = NOW(),
                       trip_id = EXCLUDED.trip_id
                   WHERE protection_locks.until < EXCLUDED.until""",
                (trip.lock.symbol, trip.lock.reason.value, trip.lock.until, trip.lock.detail, actor, trip_id),
            )
        await append(
            cursor,
            [
                Entry(
                    key=f"protection:{trip_id}",
                    actor=actor,
                    action="protection",
                    subject=trip.reason,
                    payload={"trip_id": trip_id, "message": trip.message, "halt": trip.halt, "figures": trip.figures}
                    | (
                        {"lock": {"symbol": trip.lock.symbol, "until": trip.lock.until, "reason": trip.lock.reason}}
                        if trip.lock is not None
                        else {}
                    ),
                    at=trip.at,
                )
            ],
        )
    return True


DAY_HALT_PREFIX = "DAILY_LOSS_LIMIT: "


async def resume_after_day_halt(db: Database, day_start: datetime, day: str, *, actor: str = ACTOR) -> bool:
    """A DAILY_LOSS_LIMIT halt lasts until the next trading day: ACTIVE again (audited) when trading
    is still HALTED by that trip from before `day_start`. A manual halt, or one of another protection,
    stays. Returns whether it resumed; once per day however often it is asked."""
    async with db.pool.connection() as connection, connection.transaction(), connection.cursor() as cursor:
        await lock_chain(cursor)
        await cursor.execute("SELECT state, reason, updated_by, updated_at FROM trading_state WHERE id = 1 FOR UPDATE")
        row = await cursor.fetchone()
        if row is None:
            return False
        state, reason, updated_by, updated_at = row
        if not (
            state == TradingState.HALTED.value
            and updated_by == actor
            and (reason or "").startswith(DAY_HALT_PREFIX)
            and updated_at < day_start
        ):
            return False
        await switch_trading_state(
            cursor,
            TradingState.ACTIVE,
            reason=f"{DAY_HALT_PREFIX}a new trading day ({day})",
            actor=actor,
            details={"day": day, "halted_at": updated_at.isoformat()},
            key=f"trading_state:day-resume:{day}",
        )
    return True


async def locks_in_force(db: Database, now: datetime | None = None) -> dict[str, SymbolLock]:
    rows = await db.fetch(
        "SELECT symbol, reason, until, detail FROM protection_locks WHERE until > %s", (now or datetime.now(UTC),)
    )
    return {r[0]: SymbolLock(r[0], RiskReason(r[1]), r[2], r[3]) for r in rows}


class LockCache:
    """The locks in force, read at most every `ttl` seconds (as the trading state is)."""

    def __init__(self, database: Database, ttl: float = 0.2):
        self.database = database
        self.ttl = ttl
        self._value: dict[str, SymbolLock] = {}
        self._read_at = float("-inf")

    async def get(self) -> dict[str, SymbolLock]:
        if time.monotonic() - self._read_at >= self.ttl:
            # every lock, expired or not: the risk stage compares `until` with its own clock
            rows = await self.database.fetch("SELECT symbol, reason, until, detail FROM protection_locks")
            self._value = {r[0]: SymbolLock(r[0], RiskReason(r[1]), r[2], r[3]) for r in rows}
            self._read_at = time.monotonic()
        return self._value


async def closed_positions(db: Database) -> list[tuple[str, str, Decimal, str | None, datetime]]:
    """(position id, symbol, realized PnL, close reason, closed at) of every closed position, oldest
    first: the monitor's figures are rebuilt from them at start."""
    rows = await db.fetch(
        """SELECT position_id::text, symbol, realized_pnl, close_reason, closed_at FROM positions
            WHERE status <> 'open' AND closed_at IS NOT NULL ORDER BY closed_at, position_id"""
    )
    return [(r[0], r[1], r[2] or Decimal(0), r[3], r[4]) for r in rows]


class PgComplianceStore:
    """The compliance stage's port (agents/compliance.ComplianceStore) on PostgreSQL."""

    def __init__(self, database: Database):
        self.database = database

    async def apply_trip(self, trip_id: str, trip: Trip) -> bool:
        return await apply_trip(self.database, trip_id, trip)

    async def closed_positions(self) -> list[tuple[str, str, Decimal, str | None, datetime]]:
        return await closed_positions(self.database)

    async def resume_after_day_halt(self, day_start: datetime, day: str) -> bool:
        return await resume_after_day_halt(self.database, day_start, day)


class RedisFiguresBoard:
    """The monitor's book figures in Redis, for `p95 state` and the dashboard (agents/compliance.FiguresBoard)."""

    def __init__(self, redis: Any):
        self.redis = redis

    async def publish(self, figures: dict[str, Any]) -> None:
        await self.redis.set_compliance_figures(figures)


async def recent_trips(db: Database, since: datetime | None = None) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT trip_id, reason, at, subject, message, figures FROM protection_trips WHERE at >= %s ORDER BY at",
        (since or datetime(1970, 1, 1, tzinfo=UTC),),
    )
    return [
        {"trip_id": r[0], "reason": r[1], "at": r[2], "subject": r[3], "message": r[4], "figures": r[5]} for r in rows
    ]
