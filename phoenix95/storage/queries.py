"""Reads the stages and the CLI need. All parameters bound."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from phoenix95.domain.brackets import BracketTable
from phoenix95.domain.margin import liquidation_price
from phoenix95.domain.positions import Position, next_funding_time
from phoenix95.domain.risk import Exposure, RecentSignal
from phoenix95.domain.trading_state import TradingState
from phoenix95.schemas.messages import Order, RiskVerdict
from phoenix95.storage.postgres import Database


async def trading_state(db: Database) -> tuple[TradingState, str | None, datetime | None]:
    rows = await db.fetch("SELECT state, reason, updated_at FROM trading_state WHERE id = 1")
    if not rows:
        return TradingState.ACTIVE, None, None
    state, reason, updated_at = rows[0]
    return TradingState.parse(state), reason, updated_at


async def set_trading_state(
    db: Database, state: TradingState, *, reason: str, actor: str, details: dict[str, Any] | None = None
) -> datetime:
    """Switch the trading state and audit the switch (who, why, from what) in one transaction."""
    async with db.pool.connection() as connection, connection.transaction(), connection.cursor() as cursor:
        return await switch_trading_state(cursor, state, reason=reason, actor=actor, details=details)


async def switch_trading_state(
    cursor: Any,
    state: TradingState,
    *,
    reason: str,
    actor: str,
    details: dict[str, Any] | None = None,
    key: str | None = None,
) -> datetime:
    """`set_trading_state` inside the caller's transaction (the compliance monitor's trips use it)."""
    from phoenix95.domain.audit import Entry
    from phoenix95.storage.audit import append

    await cursor.execute("SELECT state FROM trading_state WHERE id = 1 FOR UPDATE")
    before = await cursor.fetchone()
    await cursor.execute(
        """INSERT INTO trading_state (id, state, reason, updated_by, updated_at) VALUES (1, %s, %s, %s, NOW())
           ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, reason = EXCLUDED.reason,
               updated_by = EXCLUDED.updated_by, updated_at = EXCLUDED.updated_at
           RETURNING updated_at""",
        (state.value, reason, actor),
    )
    row = await cursor.fetchone()
    assert row is not None
    updated_at: datetime = row[0]
    payload: dict[str, Any] = {"state": state.value, "reason": reason, "previous": before[0] if before else None}
    if details:
        payload["details"] = details
    entry = Entry(
        key=key or f"trading_state:{uuid.uuid4()}",
        actor=actor,
        action="trading_state",
        subject=state.value,
        payload=payload,
        at=updated_at,
    )
    await append(cursor, [entry])
    return updated_at


async def realized_pnl(db: Database) -> Decimal:
    rows = await db.fetch("SELECT realized_pnl FROM paper_account")
    return Decimal(rows[0][0]) if rows else Decimal(0)


async def exposures(db: Database, *, pending_window: timedelta = timedelta(hours=1)) -> list[Exposure]:
    """Open positions, plus approved opening verdicts whose position is not open yet (pending)."""
    rows = await db.fetch(
        """SELECT position_id::text, symbol, side, quantity, leveraged_size, margin_used, opened_at, FALSE
             FROM positions WHERE status = 'open'
           UNION ALL
           SELECT v.verdict_id::text, v.symbol, v.side, v.quantity, v.notional, v.initial_margin, v.decided_at, TRUE
             FROM risk_verdicts v
            WHERE v.decision = 'APPROVED' AND v.intent = 'open'
              AND v.decided_at >= (SELECT COALESCE(MAX(decided_at), NOW()) FROM risk_verdicts
                                    WHERE decision = 'APPROVED') - %s
              AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.verdict_id = v.verdict_id
                                AND (o.status = 'rejected'
                                     OR EXISTS (SELECT 1 FROM positions p WHERE p.trade_id = o.order_id)))""",
        (pending_window,),
    )
    return [
        Exposure(
            reference_id=r[0],
            symbol=r[1],
            side=r[2],
            quantity=r[3],
            notional=r[4],
            margin=r[5],
            opened_at=r[6],
            pending=r[7],
        )
        for r in rows
    ]


async def recent_verdicts(db: Database, *, window: timedelta) -> tuple[list[datetime], list[RecentSignal]]:
    """Approval times and signals of the last `window` before the newest verdict (recovery of the
    risk stage's rate and duplicate windows)."""
    rows = await db.fetch(
        """SELECT v.decided_at, v.decision, v.signal_id, v.symbol, v.side, COALESCE(s.strategy, ''),
                  COALESCE(s.timeframe, ''), v.signal_time
             FROM risk_verdicts v
             LEFT JOIN signals s ON s.signal_id = v.signal_id
            WHERE v.decided_at >= (SELECT COALESCE(MAX(decided_at), NOW()) FROM risk_verdicts) - %s
            ORDER BY v.decided_at""",
        (window,),
    )
    approvals = [r[0] for r in rows if r[1] == "APPROVED"]
    signals = [
        RecentSignal(signal_id=r[2], symbol=r[3], side=r[4], strategy=r[5], timeframe=r[6], time=r[7]) for r in rows
    ]
    return approvals, signals


async def verdicts_by_id(db: Database, verdict_ids: Sequence[str]) -> dict[str, RiskVerdict]:
    if not verdict_ids:
        return {}
    rows = await db.fetch("SELECT verdict FROM risk_verdicts WHERE verdict_id = ANY(%s::uuid[])", (list(verdict_ids),))
    verdicts = [RiskVerdict.model_validate(row[0]) for row in rows]
    return {v.verdict_id: v for v in verdicts}


async def orders_by_verdict(db: Database, verdict_ids: Sequence[str]) -> dict[str, Order]:
    if not verdict_ids:
        return {}
    rows = await db.fetch("SELECT order_data FROM orders WHERE verdict_id = ANY(%s::uuid[])", (list(verdict_ids),))
    orders = [Order.model_validate(row[0]) for row in rows]
    return {o.verdict_id: o for o in orders}


_POSITION_COLUMNS = """position_id::text, trade_id::text, signal_id, symbol, side, quantity, leverage, margin_mode,
    entry_price, margin_used, stop_loss_price, take_profit_price, liquidation_price, total_fees_paid, opened_at,
    auto_close_at, current_price, mark_price, last_price_update, funding_paid, status, exit_price, closed_at,
    close_reason, realized_pnl, max_profit, max_drawdown,
    (SELECT o.fee FROM orders o WHERE o.order_id = positions.trade_id) AS entry_fee"""


def _position(row: tuple[Any, ...], brackets: BracketTable, funding_interval: timedelta) -> Position:
    (
        position_id,
        order_id,
        signal_id,
        symbol,
        side,
        quantity,
        leverage,
        margin_mode,
        entry,
        margin,
        stop,
        target,
        liquidation,
        fees,
        opened_at,
        auto_close_at,
        price,
        mark,
        last_update,
        funding,
        status,
        exit_price,
        closed_at,
        close_reason,
        realized,
        max_profit,
        max_drawdown,
        entry_fee,
    ) = row
    entry_fee = entry_fee if entry_fee is not None else fees
    quote = liquidation_price(
        side=side, quantity=quantity, entry_price=entry, wallet_balance=margin, brackets=brackets.for_symbol(symbol)
    )
    return Position(
        position_id=position_id,
        order_id=order_id,
        signal_id=signal_id,
        symbol=symbol,
        side=side,
        quantity=quantity,
        leverage=leverage,
        margin_mode=margin_mode,
        entry_price=entry,
        margin=margin,
        maint_margin_ratio=quote.bracket.maint_margin_ratio,
        maint_cum=quote.bracket.cum,
        stop_loss_price=stop,
        take_profit_price=target,
        liquidation_price=liquidation,
        entry_fee=entry_fee,
        exit_fee=(fees or Decimal(0)) - entry_fee if status != "open" else Decimal(0),
        opened_at=opened_at,
        auto_close_at=auto_close_at,
        next_funding_at=next_funding_time(last_update, funding_interval),
        last_price=price or entry,
        mark_price=mark or price or entry,
        last_event_time=last_update,
        funding_paid=funding or Decimal(0),
        status=status,
        exit_price=exit_price,
        closed_at=closed_at,
        close_reason=close_reason,
        realized_pnl=realized or Decimal(0),
        max_roe=max_profit or Decimal(0),
        min_roe=max_drawdown or Decimal(0),
    )


async def open_positions(
    db: Database, brackets: BracketTable, funding_interval: timedelta, symbols: Sequence[str] | None = None
) -> list[Position]:
    if symbols is None:
        rows = await db.fetch(f"SELECT {_POSITION_COLUMNS} FROM positions WHERE status = 'open'")
    else:
        rows = await db.fetch(
            f"SELECT {_POSITION_COLUMNS} FROM positions WHERE status = 'open' AND symbol = ANY(%s)", (list(symbols),)
        )
    return [_position(row, brackets, funding_interval) for row in rows]


async def positions_by_id(
    db: Database, ids: Sequence[str], brackets: BracketTable, funding_interval: timedelta
) -> dict[str, Position]:
    if not ids:
        return {}
    rows = await db.fetch(
        f"SELECT {_POSITION_COLUMNS} FROM positions WHERE position_id = ANY(%s::uuid[])", (list(ids),)
    )
    positions = [_position(row, brackets, funding_interval) for row in rows]
    return {p.position_id: p for p in positions}


async def table_counts(db: Database) -> dict[str, int]:
    rows = await db.fetch(
        """SELECT (SELECT COUNT(*) FROM signals), (SELECT COUNT(*) FROM trades), (SELECT COUNT(*) FROM positions),
                  (SELECT COUNT(*) FROM risk_verdicts), (SELECT COUNT(*) FROM orders), (SELECT COUNT(*) FROM dead_letters)"""
    )
    signals, trades, positions, verdicts, orders, dead = rows[0]
    return {
        "signals": signals,
        "trades": trades,
        "positions": positions,
        "risk_verdicts": verdicts,
        "orders": orders,
        "dead_letters": dead,
    }


async def all_positions(db: Database, brackets: BracketTable, funding_interval: timedelta) -> list[Position]:
    rows = await db.fetch(f"SELECT {_POSITION_COLUMNS} FROM positions ORDER BY opened_at, position_id")
    return [_position(row, brackets, funding_interval) for row in rows]
