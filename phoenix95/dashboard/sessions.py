"""Dashboard sessions in Redis (they expire): a random cookie token, stored as its SHA-256, with the
principal and a CSRF token; login rate limits; one-time login links (`p95 demo --keep`)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from phoenix95.api.security import Principal
from phoenix95.storage.redis_state import RedisState

COOKIE = "p95_session"
ONE_TIME_TTL_S = 3600


@dataclass(frozen=True)
class Session:
    principal: Principal
    csrf: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _key(redis: RedisState, kind: str, token: str) -> str:
    return f"{redis.keys.prefix}dashboard:{kind}:{_digest(token)}"


async def create(redis: RedisState, principal: Principal, ttl_s: int) -> str:
    token = secrets.token_urlsafe(32)
    key = _key(redis, "session", token)
    mapping = {
        "kind": principal.kind,
        "name": principal.name,
        "role": principal.role,
        "csrf": secrets.token_urlsafe(24),
    }
    pipe = redis.client.pipeline(transaction=True)
    pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
    pipe.expire(key, ttl_s)
    await pipe.execute()
    return token


async def load(redis: RedisState, token: str | None) -> Session | None:
    if not token or len(token) > 100:
        return None
    data = await redis.client.hgetall(_key(redis, "session", token))
    if not data:
        return None
    fields = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in data.items()
    }
    if fields.get("role") not in ("viewer", "operator") or fields.get("kind") not in ("key", "user"):
        return None
    return Session(Principal(fields["kind"], fields["name"], fields["role"]), fields["csrf"])  # type: ignore[arg-type]


async def destroy(redis: RedisState, token: str | None) -> None:
    if token:
        await redis.client.delete(_key(redis, "session", token))


async def one_time_link(redis: RedisState, role: str, name: str = "demo", ttl_s: int = ONE_TIME_TTL_S) -> str:
    """A token that logs in once (as user `name` with `role`) within `ttl_s`."""
    token = secrets.token_urlsafe(24)
    key = _key(redis, "once", token)
    pipe = redis.client.pipeline(transaction=True)
    pipe.hset(key, mapping={"role": role, "name": name})
    pipe.expire(key, ttl_s)
    await pipe.execute()
    return token


async def redeem(redis: RedisState, token: str) -> Principal | None:
    if not token or len(token) > 100:
        return None
    key = _key(redis, "once", token)
    pipe = redis.client.pipeline(transaction=True)
    pipe.hgetall(key)
    pipe.delete(key)
    data, _ = await pipe.execute()
    if not data:
        return None
    fields = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in data.items()
    }
    if fields.get("role") not in ("viewer", "operator"):
        return None
    return Principal("user", fields.get("name", "demo"), fields["role"])  # type: ignore[arg-type]
