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

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from phoenix95.agents.ports import Fact, PositionChanged, PriceObserved, SignalAnalyzed
from phoenix95.storage.retry import retry_transient

CLOSED_POSITION_TTL_S = 86400

# KEYS[1] position hash, KEYS[2] active set; ARGV[1] event time (µs), ARGV[2] position id,
# ARGV[3] "open"/"closed", ARGV[4] ttl for closed, ARGV[5..] field/value pairs.
_POSITION_SCRIPT = """
local current = redis.call('HGET', KEYS[1], 'event_time_us')
if current and tonumber(current) > tonumber(ARGV[1]) then return 0 end
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], 'event_time_us', ARGV[1], unpack(fields))
if ARGV[3] == 'open' then
  redis.call('SADD', KEYS[2], ARGV[2])
  redis.call('PERSIST', KEYS[1])
else
  redis.call('SREM', KEYS[2], ARGV[2])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
end
return 1
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

    def replay_guard(self, digest: str) -> str:
        return f"{self.prefix}webhook:seen:{digest}"


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, default=_default, separators=(",", ":"))


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

        return await retry_transient(run, what="redis pipeline", is_transient=is_transient)

    def _queue(self, pipe: Any, facts: Sequence[Fact]) -> int:
        count = 0
        now = datetime.now(UTC).isoformat()
        for fact in facts:
            if isinstance(fact, PriceObserved):
                p = fact.price
                value = {
                    "symbol": p.symbol,
                    "price": p.price,
                    "mark_price": p.mark_price,
                    "timestamp": p.ts_event,
                    "source": p.source,
                    "cached_at": now,
                    "ttl": self.price_ttl,
                }
                pipe.setex(self.keys.price(p.symbol, p.exchange), self.price_ttl, _json(value))
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
                pipe.setex(self.keys.analysis(a.signal_id), self.analysis_ttl, _json(value))
                count += 1
            elif isinstance(fact, PositionChanged):
                self._queue_position(pipe, fact)
                count += 1
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

    def _queue_position(self, pipe: Any, fact: PositionChanged) -> None:
        fields = self.position_fields(fact)
        event_time_us = int(fact.event.ts_event.timestamp() * 1_000_000)
        args: list[Any] = [
            event_time_us,
            fact.position.position_id,
            "open" if fact.position.is_open else "closed",
            CLOSED_POSITION_TTL_S,
        ]
        for key, value in fields.items():
            args.extend((key, value))
        # EVAL (not EVALSHA) keeps working after a Redis restart emptied the script cache.
        pipe.eval(
            _POSITION_SCRIPT, 2, self.keys.position(fact.position.position_id), self.keys.active_positions(), *args
        )

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
