"""Live updates: one background task per dashboard process reads the open positions (PostgreSQL rows
with their latest state from Redis) and the trading state, and appends what changed, rendered, to a
Redis stream of bounded length (XADD MAXLEN ~). Every open page is an SSE client of that stream: an
event's id is its stream id, so a browser reconnecting with Last-Event-ID gets every event still held.
The page never talks to the stages, and 100 pages cost one reader, not 100."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

from phoenix95.api import reads
from phoenix95.api.runtime import Runtime

logger = logging.getLogger(__name__)

STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
#: XREAD blocks at most this long per call (under the Redis client's 5 s socket timeout).
BLOCK_MS = 2000


def stream_key(runtime: Runtime) -> str:
    return f"{runtime.redis.keys.prefix}dashboard:events"


async def publish(runtime: Runtime, event: str, data: str) -> str:
    """Append one event; returns its id."""
    entry = await runtime.redis.client.xadd(
        stream_key(runtime),
        {"event": event, "data": data},
        maxlen=runtime.settings.dashboard.stream_max_len,
        approximate=True,
    )
    return entry.decode() if isinstance(entry, bytes) else str(entry)


class Feed:
    """Polls the stores and publishes `positions` (the open-positions rows), `totals` and `state`
    events when they change."""

    def __init__(self, runtime: Runtime, render: Callable[[str, dict[str, Any]], str]):
        self.runtime = runtime
        self.render = render
        self._last: dict[str, Any] = {}

    async def run(self) -> None:
        interval = self.runtime.settings.dashboard.poll_interval_s
        while True:
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # a store restarting: try again next round
                logger.warning("live feed: %s", error)
            await asyncio.sleep(interval)

    async def poll(self) -> None:
        runtime = self.runtime
        positions = await reads.open_positions(runtime.db, runtime.redis)
        signature = tuple((p["position_id"], str(p["mark_price"]), str(p["last_price_update"])) for p in positions)
        if signature != self._last.get("positions"):
            self._last["positions"] = signature
            await publish(runtime, "positions", self.render("_positions_rows.html", {"positions": positions}))
            totals = {
                "open_count": len(positions),
                "unrealized": sum((p["unrealized_pnl"] or 0 for p in positions), 0),
            }
            await publish(runtime, "totals", self.render("_totals.html", totals))
        rows = await runtime.db.fetch("SELECT state, reason, updated_by, updated_at FROM trading_state WHERE id = 1")
        state = rows[0] if rows else None
        if state != self._last.get("state"):
            self._last["state"] = state
            if state is not None:
                context = {"state": state[0], "reason": state[1], "updated_by": state[2], "updated_at": state[3]}
                await publish(runtime, "state", self.render("_state.html", context))


async def events(
    runtime: Runtime, last_event_id: str | None, is_disconnected: Callable[[], Any]
) -> AsyncIterator[dict[str, str]]:
    """The SSE events after `last_event_id` (or from now), for as long as the client stays."""
    client: Any = runtime.redis.client
    key = stream_key(runtime)
    cursor: str
    if last_event_id and STREAM_ID.match(last_event_id):
        cursor = last_event_id
        first = await client.xrange(key, count=1)
        if first and _older(cursor, _s(first[0][0])):
            # trimmed past the client's position: tell the page some events are gone
            yield {"event": "reset", "data": "reload", "id": _s(first[0][0])}
    else:
        newest = await client.xrevrange(key, count=1)
        cursor = _s(newest[0][0]) if newest else "0-0"
    while True:
        if await is_disconnected():
            return
        found: Any = await client.xread({key: cursor}, count=100, block=BLOCK_MS)
        for _, entries in found or []:
            for entry_id, fields in entries:
                values = {_s(k): _s(v) for k, v in fields.items()}
                cursor = _s(entry_id)
                yield {"id": cursor, "event": values.get("event", "message"), "data": values.get("data", "")}


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _older(a: str, b: str) -> bool:
    ams, aseq = (int(x) for x in a.split("-"))
    bms, bseq = (int(x) for x in b.split("-"))
    return (ams, aseq) < (bms, bseq)


@contextlib.asynccontextmanager
async def running(feed: Feed) -> AsyncIterator[None]:
    task = asyncio.create_task(feed.run(), name="p95-dashboard-feed")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
