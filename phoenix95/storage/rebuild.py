"""Rebuild Redis hot state from PostgreSQL (Redis is a cache: losing it loses nothing)."""

from __future__ import annotations

from datetime import timedelta

from phoenix95.agents.ports import PositionChanged
from phoenix95.domain.brackets import BracketTable
from phoenix95.domain.positions import PositionEvent, metrics
from phoenix95.schemas.convert import position_message
from phoenix95.storage import queries
from phoenix95.storage.postgres import Database
from phoenix95.storage.redis_state import RedisState


async def rebuild_redis(
    db: Database, redis: RedisState, brackets: BracketTable, funding_interval: timedelta
) -> dict[str, int]:
    """Restore the active-positions set, every open position's hash and the trading state."""
    positions = await queries.open_positions(db, brackets, funding_interval)
    facts = []
    for position in positions:
        current = metrics(position, position.last_price, position.mark_price)
        event = PositionEvent(
            "tick", position.last_event_time, position.last_price, position.mark_price, current, cause_id="rebuild"
        )
        facts.append(PositionChanged(position_message(position, event, cause="rebuild", equity=None), position))
    await redis.client.delete(redis.keys.active_positions())
    written = await redis.apply(facts) if facts else 0
    state, reason, updated_at = await queries.trading_state(db)
    if updated_at is not None:
        await redis.set_trading_state(state.value, reason or "", updated_at)
    return {"positions": written, "trading_state": 1 if updated_at is not None else 0}
