"""Redis hot state with the seed's key structure (prefix configurable, default ``s4:``).

=====================================  ===========================================  =========
key                                    value                                        TTL
=====================================  ===========================================  =========
``s4:price:{SYMBOL}:{exchange}``       JSON: last price, mark, event time           60 s
``s4:analysis:{signal_id}``            JSON: Phoenix-95 score, final confidence     180 s
``s4:position:{position_id}:realtime`` hash: the position's latest state            open: none,
                                                                                    closed: 1 day
``s4:positions:active``                set of open position ids                     none
``s4:trading_state``                   hash: state, reason, updated_at              none
``s4:rate_limit:{source}:{minute}``    counter (webhook rate limit)                 60 s
``s4:metrics:{service}``               JSON: worker metrics                         15 s
=====================================  ===========================================  =========

Redis is a cache: losing it loses nothing, ``p95 redis rebuild`` restores the positions and the
trading state from PostgreSQL. Position hashes only move forward in event time (a re-delivered older
tick does not overwrite a newer state).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from phoenix95.agents.ports import Fact, PositionChanged, PriceObserved, SignalAnalyzed
from phoenix95.storage.retry import retry_transient

CLOSED_POSITION_TTL_S = 86400

# Many positions in one call. KEYS[1] the active set; ARGV: the closed-hash TTL, then per position:
# hash key, event time (µs), position id, "open"/"closed", the fields as one JSON object (one
# argument instead of forty: packing arguments is most of the client's cost).
# A state older than the stored one is skipped: hashes only move forward in event time.
_POSITIONS_SCRIPT = """
local ttl = tonumber(ARGV[1])
local written = 0
for i = 2, #ARGV, 5 do
  local key, at, id, status = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local current = redis.call('HGET', key, 'event_time_us')
  if not current or tonumber(current) <= tonumber(at) then
    local pairs_ = {'event_time_us', at}
    for field, value in pairs(cjson.decode(ARGV[i + 4])) do
      pairs_[#pairs_ + 1] = field
      pairs_[#pairs_ + 1] = value
    end
    redis.call('HSET', key, unpack(pairs_))
    if status == 'open' then
      redis.call('SADD', KEYS[1], id)
      redis.call('PERSIST', key)
    else
      redis.call('SREM', KEYS[1], id)
      redis.call('EXPIRE', key, ttl)
    end
    written = written + 1
  end
end
return written
"""
# Many string keys with one TTL in one call: ARGV[1] the TTL, ARGV[2] one JSON array of
# [key, value] pairs. One argument instead of a thousand: the client's per-argument packing, not
# Redis, is what limits a Python writer (a single-instance Redis; a cluster would need KEYS).
_SET_MANY_SCRIPT = """
local ttl = ARGV[1]
local entries = cjson.decode(ARGV[2])
for i = 1, #entries do redis.call('SET', entries[i][1], entries[i][2], 'EX', ttl) end
return #entries
"""


def is_transient(error: BaseException) -> bool:
    return isinstance(error, RedisConnectionError | RedisTimeoutError | ConnectionError | TimeoutError | OSError)


@dataclass(frozen=True)
class Keys:
    prefix: str = "s4:"

    def price(self, symbol: str, exchange: str = "binance") -> str:
        return f"{self.prefix}price:{symbol.upper()}:{exchange.lower()}"

    def analysis(self, signal_id: str) -> str:
        return f"{self.prefix}analysis:{signal_id}"

    def position(self, position_id: str) -> str:
        return f"{self.prefix}position:{position_id}:realtime"

    def active_positions(self) -> str:
        return f"{self.prefix}positions:active"

    def trading_state(self) -> str:
        return f"{self.prefix}trading_state"

    def rate_limit(self, source: str, minute: int) -> str:
        return f"{self.prefix}rate_limit:{source}:{minute}"

    def metrics(self, service: str) -> str:
        return f"{self.prefix}metrics:{service}"

    def compliance_figures(self) -> str:
        return f"{self.prefix}compliance:figures"

    def replay_guard(self, digest: str) -> str:
        return f"{self.prefix}webhook:seen:{digest}"


def _json(value: dict[str, Any]) -> str:
    """Compact JSON (orjson: a few times faster than the standard library on this hot path)."""
    return orjson.dumps(value, default=_default).decode()


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return _default(value) if isinstance(value, Decimal | datetime) else str(value)


class RedisState:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "s4:",
        price_ttl: int = 60,
        analysis_ttl: int = 180,
        metrics_ttl: int = 15,
    ):
        self.client = client
        self.keys = Keys(prefix)
        self.price_ttl = price_ttl
        self.analysis_ttl = analysis_ttl
        self.metrics_ttl = metrics_ttl
        #: Called with (attempt, error) when a write is retried (the stage counts them).
        self.on_retry: Callable[[int, BaseException], None] | None = None

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisState:
        client = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30)
        return cls(client, **kwargs)

    async def close(self) -> None:
        await self.client.aclose()

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    async def apply(self, facts: Iterable[Fact]) -> int:
        """Write the hot state of the facts in one pipeline; retry while Redis is unreachable."""
        facts = list(facts)

        async def run() -> int:
            pipe = self.client.pipeline(transaction=False)
            count = self._queue(pipe, facts)
            if count:
                await pipe.execute()
            return count

        return await retry_transient(run, what="redis pipeline", is_transient=is_transient, on_retry=self.on_retry)

    def _queue(self, pipe: Any, facts: Sequence[Fact]) -> int:
        """A few scripted commands per batch (not one per key): the client's per-command cost, not
        Redis, is what limits a Python writer."""
        count = 0
        now = datetime.now(UTC).isoformat()
        prices: dict[str, str] = {}
        analyses: dict[str, str] = {}
        positions: list[Any] = []
        for fact in facts:
            if isinstance(fact, PriceObserved):
                p = fact.price
                prices[self.keys.price(p.symbol, p.exchange)] = _json(
                    {
                        "symbol": p.symbol,
                        "price": _text(p.price),
                        "mark_price": _text(p.mark_price) if p.mark_price is not None else None,
                        "timestamp": p.ts_event.isoformat(),
                        "source": p.source,
                        "cached_at": now,
                        "ttl": self.price_ttl,
                    }
                )
                count += 1
            elif isinstance(fact, SignalAnalyzed):
                a = fact.analysis
                value = {
                    "signal_id": a.signal_id,
                    "analysis_type": a.analysis_type,
                    "phoenix95_score": a.phoenix95_score,
                    "final_confidence": a.final_confidence,
                    "quality_score": a.quality_score,
                    "cached_at": now,
                    "ttl": self.analysis_ttl,
                }
                analyses[self.keys.analysis(a.signal_id)] = _json(value)
                count += 1
            elif isinstance(fact, PositionChanged):
                positions.extend(self._position_args(fact))
                count += 1
        # EVAL (not EVALSHA): it keeps working after a Redis restart emptied the script cache.
        for values, ttl in ((prices, self.price_ttl), (analyses, self.analysis_ttl)):
            if values:
                pipe.eval(_SET_MANY_SCRIPT, 0, ttl, orjson.dumps(list(values.items())))
        if positions:
            pipe.eval(_POSITIONS_SCRIPT, 1, self.keys.active_positions(), CLOSED_POSITION_TTL_S, *positions)
        return count

    def position_fields(self, fact: PositionChanged) -> dict[str, str]:
        e, pos = fact.event, fact.position
        return {
            "position_id": pos.position_id,
            "symbol": pos.symbol,
            "side": pos.side,
            "status": pos.status,
            "leverage": str(pos.leverage),
            "margin_mode": pos.margin_mode,
            "quantity": _text(pos.quantity),
            "entry_price": _text(pos.entry_price),
            "current_price": _text(e.price),
            "mark_price": _text(e.mark_price),
            "unrealized_pnl": _text(e.unrealized_pnl if pos.is_open else Decimal(0)),
            "roe": _text(e.roe),
            "margin_ratio": _text(e.margin_ratio),
            "distance_to_liquidation": _text(e.distance_to_liquidation),
            "risk_level": e.risk_level,
            "liquidation_price": _text(pos.liquidation_price),
            "stop_loss_price": _text(pos.stop_loss_price),
            "take_profit_price": _text(pos.take_profit_price),
            "realized_pnl": _text(pos.realized_pnl),
            "last_updated": e.ts_event.isoformat(),
            "monitoring_interval": "5",
        }

    def _position_args(self, fact: PositionChanged) -> list[Any]:
        return [
            self.keys.position(fact.position.position_id),
            int(fact.event.ts_event.timestamp() * 1_000_000),
            fact.position.position_id,
            "open" if fact.position.is_open else "closed",
            orjson.dumps(self.position_fields(fact)),
        ]

    async def set_trading_state(self, state: str, reason: str, updated_at: datetime) -> None:
        await self.client.hset(
            self.keys.trading_state(), mapping={"state": state, "reason": reason, "updated_at": updated_at.isoformat()}
        )

    async def trading_state(self) -> str | None:
        value = await self.client.hget(self.keys.trading_state(), "state")
        return value.decode() if isinstance(value, bytes) else value

    async def active_positions(self) -> set[str]:
        members = await self.client.smembers(self.keys.active_positions())
        return {m.decode() if isinstance(m, bytes) else m for m in members}

    async def set_metrics(self, service: str, metrics: dict[str, Any]) -> None:
        await self.client.setex(self.keys.metrics(service), self.metrics_ttl, _json(metrics))

    async def set_compliance_figures(self, figures: dict[str, Any]) -> None:
        """The compliance monitor's book figures (hot state: the monitor rebuilds them at start)."""
        await self.client.set(self.keys.compliance_figures(), _json(figures))

    async def compliance_figures(self) -> dict[str, Any] | None:
        value = await self.client.get(self.keys.compliance_figures())
        return orjson.loads(value) if value else None

    async def hit_rate_limit(self, source: str, minute: int, limit: int) -> tuple[bool, int]:
        """Count one request of `source` in `minute`; (allowed, count)."""
        key = self.keys.rate_limit(source, minute)
        pipe = self.client.pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, 60)
        count, _ = await pipe.execute()
        return int(count) <= limit, int(count)

    async def count_keys(self) -> int:
        total = 0
        async for _ in self.client.scan_iter(match=f"{self.keys.prefix}*", count=1000):
            total += 1
        return total
