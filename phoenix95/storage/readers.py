"""PostgreSQL-backed implementations of the read ports the stages use."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from phoenix95.agents.ports import Snapshot
from phoenix95.aio import all_of
from phoenix95.domain.book import PendingOrder
from phoenix95.domain.brackets import BracketTable
from phoenix95.domain.positions import Position
from phoenix95.domain.protections import ClosedFact
from phoenix95.domain.risk import RecentSignal
from phoenix95.domain.trading_state import TradingState
from phoenix95.schemas.convert import pending_order
from phoenix95.schemas.messages import Order, RiskVerdict
from phoenix95.storage import queries
from phoenix95.storage.compliance import closed_positions
from phoenix95.storage.postgres import Database, is_transient
from phoenix95.storage.retry import retry_transient

logger = logging.getLogger(__name__)


class PgSeenSignals:
    def __init__(self, database: Database):
        self.database = database

    async def __call__(self, signal_ids: Sequence[str]) -> dict[str, object]:
        rows = await self.database.fetch(
            "SELECT signal_id, MIN(received_at) FROM signals WHERE signal_id = ANY(%s) GROUP BY signal_id",
            (list(signal_ids),),
        )
        return {row[0]: row[1] for row in rows}


class _StateCache:
    """The trading state, read at most every `ttl` seconds (a halt takes effect within that)."""

    def __init__(self, database: Database, ttl: float = 0.2):
        self.database = database
        self.ttl = ttl
        self._value = TradingState.ACTIVE
        self._read_at = 0.0

    async def get(self) -> TradingState:
        if time.monotonic() - self._read_at >= self.ttl:
            self._value, _, _ = await queries.trading_state(self.database)
            self._read_at = time.monotonic()
        return self._value


class PgPortfolio:
    def __init__(
        self, database: Database, starting_equity: Decimal, brackets: BracketTable, funding_interval: timedelta
    ):
        self.database = database
        self.starting_equity = starting_equity
        self.brackets = brackets
        self.funding_interval = funding_interval
        self._state = _StateCache(database)

    async def trading_state(self) -> TradingState:
        return await self._state.get()

    async def book_state(self) -> tuple[list[Position], list[PendingOrder], Decimal]:
        """Open positions, approved verdicts without an order yet, realized PnL (to rebuild the paper book)."""
        positions = await queries.open_positions(self.database, self.brackets, self.funding_interval)
        rows = await self.database.fetch(
            """SELECT v.verdict FROM risk_verdicts v
                WHERE v.decision = 'APPROVED'
                  AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.verdict_id = v.verdict_id)
                ORDER BY v.decided_at"""
        )
        pending = [pending_order(RiskVerdict.model_validate(row[0])) for row in rows]
        return positions, pending, await queries.realized_pnl(self.database)

    async def closed_positions(self) -> list[ClosedFact]:
        rows = await closed_positions(self.database)
        return [ClosedFact(at, symbol, pid, pnl, reason) for pid, symbol, pnl, reason, at in rows]

    async def snapshot(self) -> Snapshot:
        # three reads at once, each on its own pooled connection: a decision waits for the slowest,
        # not for the sum of their round trips (statements apart already: no read sees a transaction)
        exposures, realized, state = await all_of(
            queries.exposures(self.database), queries.realized_pnl(self.database), self._state.get()
        )
        return Snapshot(equity=self.starting_equity + realized, trading_state=state, exposures=tuple(exposures))

    async def verdicts(self, verdict_ids: Sequence[str]) -> dict[str, RiskVerdict]:
        return await queries.verdicts_by_id(self.database, verdict_ids)

    async def recent(self, window: timedelta) -> tuple[list[datetime], list[RecentSignal]]:
        return await queries.recent_verdicts(self.database, window=window)


class PgExecutionState:
    def __init__(self, database: Database):
        self.database = database
        self._state = _StateCache(database)

    async def trading_state(self) -> TradingState:
        return await self._state.get()

    @contextlib.asynccontextmanager
    async def submission(self) -> AsyncIterator[TradingState]:
        """The trading state read under a share lock held until the block ends (the exchange
        answered): `p95 halt` (which takes the row for update) waits for a submission in flight,
        and every submission after its commit sees HALTED. Nothing is approved past a halt."""
        pool = self.database.pool

        async def begin() -> tuple[Any, TradingState]:
            connection = await pool.getconn()
            try:
                cursor = await connection.execute("SELECT state FROM trading_state WHERE id = 1 FOR SHARE")
                row = await cursor.fetchone()
            except BaseException:
                await pool.putconn(connection)
                raise
            return connection, TradingState.parse(row[0]) if row else TradingState.ACTIVE

        connection, state = await retry_transient(
            begin, what="trading state for a submission", is_transient=is_transient, max_delay=2.0
        )
        try:
            yield state
        finally:
            try:
                await connection.rollback()  # nothing was written: this only releases the share lock
            except Exception as error:  # a lost connection released it already
                logger.warning("releasing the trading-state share lock failed: %s", error)
            finally:
                await pool.putconn(connection)

    async def orders(self, verdict_ids: Sequence[str]) -> dict[str, Order]:
        return await queries.orders_by_verdict(self.database, verdict_ids)

    async def open_quantity(self, position_ids: Sequence[str]) -> dict[str, Decimal]:
        rows = await self.database.fetch(
            "SELECT position_id::text, quantity FROM positions WHERE status = 'open' AND position_id = ANY(%s::uuid[])",
            (list(position_ids),),
        )
        return {row[0]: row[1] for row in rows}

    async def entry_orders(self, position_ids: Sequence[str]) -> dict[str, str]:
        rows = await self.database.fetch(
            "SELECT position_id::text, trade_id::text FROM positions WHERE position_id = ANY(%s::uuid[])",
            (list(position_ids),),
        )
        return {row[0]: row[1] for row in rows}


class PgPositionStore:
    def __init__(self, database: Database, brackets: BracketTable, funding_interval: timedelta):
        self.database = database
        self.brackets = brackets
        self.funding_interval = funding_interval

    async def open_positions(self) -> list[Position]:
        return await queries.open_positions(self.database, self.brackets, self.funding_interval)

    async def positions(self, position_ids: Sequence[str]) -> dict[str, Position]:
        return await queries.positions_by_id(self.database, position_ids, self.brackets, self.funding_interval)

    async def realized_pnl(self) -> Decimal:
        return await queries.realized_pnl(self.database)
