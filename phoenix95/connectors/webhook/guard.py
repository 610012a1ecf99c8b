"""Whether an authenticated alert may go on: its age, and the Redis rate limit and replay guard."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import redis.asyncio as aioredis

from phoenix95.schemas.messages import Signal
from phoenix95.storage.redis_state import Keys


def age_problem(signal: Signal, now: float, max_age_s: float) -> str | None:
    """Why the alert's own timestamp rules it out (too old, or as far in the future), or None."""
    if signal.source_timestamp is None or max_age_s <= 0:
        return None
    age = now - signal.source_timestamp.timestamp()
    if age > max_age_s:
        return f"the alert is {age:.0f} s old; alerts older than {max_age_s:g} s are rejected"
    if -age > max_age_s:
        return f"the alert is {-age:.0f} s in the future; check the sender's clock"
    return None


def retry_after(now: float) -> int:
    """Seconds until the current rate-limit minute ends."""
    return max(1, 60 - int(now) % 60)


# -- Redis: rate limit and replay guard in one round trip -------------------------------------------

# KEYS[1] the source's counter for this minute, KEYS[2..] replay-guard keys.
# ARGV[1] limit (0: none), ARGV[2] guard lifetime (ms), ARGV[3] the new signal's id, ARGV[4] 1 to guard.
# Returns {0, count} over the limit, {2, count, first id} already seen, {1, count} admitted.
_ADMIT_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], 60) end
local limit = tonumber(ARGV[1])
if limit > 0 and count > limit then return {0, count} end
if ARGV[4] ~= '1' then return {1, count} end
for i = 2, #KEYS do
  local seen = redis.call('GET', KEYS[i])
  if seen then return {2, count, seen} end
end
for i = 2, #KEYS do redis.call('SET', KEYS[i], ARGV[3], 'PX', ARGV[2]) end
return {1, count}
"""


@dataclass(frozen=True)
class Admission:
    verdict: Literal["admitted", "rate_limited", "duplicate"]
    count: int
    first_signal_id: str | None = None


class AlertGuard:
    """Per-source rate limit (``rate_limit:{source}:{minute}``) and replay guard
    (``webhook:seen:{digest}``) in Redis, with the key layout of `phoenix95.storage.redis_state.Keys`."""

    def __init__(self, client: aioredis.Redis, *, prefix: str, limit_per_minute: int, replay_window_s: float):
        self.client = client
        self.keys = Keys(prefix)
        self.limit = max(0, limit_per_minute)
        self.window_ms = max(1, int(replay_window_s * 1000))
        self._admit = client.register_script(_ADMIT_SCRIPT)

    def guard_keys(self, source: str, digest: str, signal_id: str | None) -> list[str]:
        keys = [self.keys.replay_guard(f"{source}:{digest}")]
        if signal_id is not None:
            keys.append(self.keys.replay_guard(f"{source}:id:{hashlib.sha256(signal_id.encode()).hexdigest()}"))
        return keys

    async def admit(self, source: str, now: float, *, guard: list[str], signal_id: str) -> Admission:
        """Count the request; when under the limit and `guard` keys are given, claim them unless an
        earlier alert did (a duplicate)."""
        rate_key = self.keys.rate_limit(source, int(now // 60))
        reply = await self._admit(
            keys=[rate_key, *guard], args=[self.limit, self.window_ms, signal_id, int(bool(guard))]
        )
        code, count = int(reply[0]), int(reply[1])
        if code == 0:
            return Admission("rate_limited", count)
        if code == 2:
            first = reply[2].decode() if isinstance(reply[2], bytes) else str(reply[2])
            return Admission("duplicate", count, first)
        return Admission("admitted", count)

    async def release(self, guard: list[str]) -> None:
        """Forget a claimed alert whose publication failed, so that sending it again can succeed."""
        if guard:
            await self.client.delete(*guard)
