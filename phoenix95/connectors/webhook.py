"""The signal webhook (`p95 serve`): TradingView-compatible alerts in, confirmed signals out.

``POST /webhook/signal`` takes a JSON body or ``text/plain`` (JSON-looking text or ``key=value``
pairs; see `phoenix95.schemas.signal_input.parse_alert`) and answers only after the broker confirmed
the write. TradingView signs nothing, so each request is checked, in this order:

====  ==========================================================================================
413   body larger than ``max_body_bytes``
403   client address outside ``allow_ips`` (when set; ``tradingview`` names TradingView's four
      addresses). ``X-Forwarded-For`` counts only when the peer is one of ``trusted_proxies``.
400   body unreadable (not UTF-8, not JSON, not ``key=value``)
401   no secret, or a wrong one: ``passphrase`` (or ``secret``/``token``/``key``) in the body, or
      the ``X-P95-Secret`` / ``Authorization: Bearer`` header; compared in constant time against
      every configured source's secret, and the match names the source
429   over ``rate_limit_per_minute`` for that source (Redis, fixed minute window), Retry-After set
422   a field is wrong (named in ``errors``), or the alert's own timestamp is older than
      ``max_alert_age_s`` (or that far in the future)
200   ``duplicate``: the same alert (same normalised content or same ``signal_id``) was accepted
      within ``replay_window_s``; nothing is published again
503   Redis or the broker unavailable, or no confirmation in ``publish_timeout_s``
200   ``published``, with the signal id, partition and offset
====  ==========================================================================================
"""

from __future__ import annotations

import gc
import hashlib
import hmac
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal, get_args

import redis.asyncio as aioredis
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import SecretStr
from starlette.routing import Route

from phoenix95.connectors.publisher import PublishError, SignalPublisher
from phoenix95.schemas.envelope import new_id
from phoenix95.schemas.messages import Signal, Source
from phoenix95.schemas.signal_input import (
    InvalidSignal,
    UnreadableAlert,
    alert_digest,
    alert_secret,
    build_alert_signal,
    parse_alert,
)
from phoenix95.storage.redis_state import Keys

logger = logging.getLogger(__name__)

#: TradingView's published webhook source addresses (https://www.tradingview.com/support/solutions/43000529348).
TRADINGVIEW_IPS = ("52.89.214.238", "34.212.75.30", "54.218.53.128", "52.32.178.7")
#: Names accepted in ``allow_ips`` for a published set of addresses.
IP_PRESETS: dict[str, tuple[str, ...]] = {"tradingview": TRADINGVIEW_IPS}
SECRET_HEADER = "x-p95-secret"
SIGNAL_PATH = "/webhook/signal"
_SOURCES = frozenset(get_args(Source))
_ACK_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Outcome = Literal[
    "published", "duplicate", "too_large", "forbidden", "malformed", "unauthorized", "rate_limited", "invalid",
    "stale", "unavailable",
]  # fmt: skip


# -- who is asking --------------------------------------------------------------------------------


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """Addresses, CIDR blocks and preset names (``tradingview``) -> networks; ValueError names a bad entry."""
    networks: list[Network] = []
    for entry in entries:
        name = entry.strip()
        for item in IP_PRESETS.get(name.lower(), (name,)):
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                presets = ", ".join(IP_PRESETS)
                raise ValueError(f"{entry!r} is not an IP address, a CIDR block or a preset ({presets})") from None
    return tuple(networks)


def _within(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


def client_address(peer: str | None, forwarded_for: str | None, trusted_proxies: tuple[Network, ...]) -> str | None:
    """The client's address: the peer, unless the peer is a trusted proxy; then the right-most
    ``X-Forwarded-For`` entry that is not itself a trusted proxy (entries further left are whatever
    the client chose to send)."""
    if peer is None or not forwarded_for or not _within(peer, trusted_proxies):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _within(hop, trusted_proxies):
            return hop
    return hops[0] if hops else peer


class SecretBook:
    """Per-source secrets. `source_for` compares what was presented with every secret, in constant
    time and without stopping at a match, and returns the matching source (or None)."""

    def __init__(self, secrets: Mapping[str, SecretStr | str]):
        self._digests = [
            (source, hashlib.sha256(_secret_text(secret).encode()).digest())
            for source, secret in secrets.items()
            if _secret_text(secret)
        ]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def source_for(self, presented: str | None) -> str | None:
        if presented is None:
            return None
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for source, expected in self._digests:
            if hmac.compare_digest(digest, expected):
                found = source
        return found


def _secret_text(secret: SecretStr | str) -> str:
    return secret.get_secret_value() if isinstance(secret, SecretStr) else secret


def presented_secret(headers: Mapping[str, str], payload: Mapping[str, Any]) -> str | None:
    header = headers.get(SECRET_HEADER)
    if header:
        return header
    authorization = headers.get("authorization", "")
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return alert_secret(payload)


def signal_source(source_name: str) -> str:
    """The `Signal.source` of alerts from a configured source: its own name when the contract knows
    it (``tradingview``, ``mt5``, ...), else ``custom``."""
    name = source_name.lower()
    return name if name in _SOURCES else "custom"


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


# -- metrics ------------------------------------------------------------------------------------------


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "p95_webhook_requests_total", "Webhook requests by outcome", ["outcome", "source"], registry=self.registry
        )
        self.ack_seconds = Histogram(
            "p95_webhook_ack_seconds",
            "Request received to answer",
            ["outcome"],
            buckets=_ACK_BUCKETS,
            registry=self.registry,
        )
        self.publish_seconds = Histogram(
            "p95_webhook_publish_seconds", "Broker confirmation time", buckets=_ACK_BUCKETS, registry=self.registry
        )

    def observe(self, outcome: Outcome, source: str | None, seconds: float) -> None:
        self.requests.labels(outcome, source or "-").inc()
        self.ack_seconds.labels(outcome).observe(seconds)


# -- the application ------------------------------------------------------------------------------


@dataclass
class WebhookConfig:
    """What the app needs from `phoenix95.settings` (WebhookSettings plus the Redis prefix)."""

    secrets: SecretBook
    allow: tuple[Network, ...]
    trusted_proxies: tuple[Network, ...]
    max_body_bytes: int
    max_alert_age_s: float
    publish_timeout_s: float

    @classmethod
    def from_settings(cls, webhook: Any) -> WebhookConfig:
        return cls(
            secrets=SecretBook(webhook.secrets),
            allow=parse_networks(webhook.allow_ips),
            trusted_proxies=parse_networks(webhook.trusted_proxies),
            max_body_bytes=webhook.max_body_bytes,
            max_alert_age_s=webhook.max_alert_age_s,
            publish_timeout_s=webhook.publish_timeout_s,
        )


_DESCRIPTION = """TradingView-compatible alerts in, confirmed signals on `p95.signals` out.

`POST /webhook/signal` takes a JSON object, or `text/plain` (JSON-looking text or `key=value` pairs).
Authenticate with the source's secret in the body (`passphrase`), the `X-P95-Secret` header or
`Authorization: Bearer`. Checks, in order: body size (413), client address (403), readable body
(400), secret (401), per-source rate limit (429 + Retry-After), fields and the alert's own
timestamp (422, the wrong field named), replay (200 `duplicate`, nothing published). `published`
is answered only after the broker confirmed the write; 503 when Redis or the broker is unavailable.
"""
_BODY_DOC = {
    "requestBody": {
        "required": True,
        "description": "One alert. The secret goes in `passphrase` (or the X-P95-Secret header).",
        "content": {
            "application/json": {
                "schema": {"type": "object", "additionalProperties": True},
                "example": {
                    "passphrase": "your-secret",
                    "ticker": "BINANCE:BTCUSDT.P",
                    "action": "buy",
                    "price": "65000.5",
                    "interval": "60",
                    "timenow": "2026-01-05T12:00:00Z",
                    "strategy": "ema-cross",
                    "confidence": "0.8",
                },
            },
            "text/plain": {
                "schema": {"type": "string"},
                "example": "passphrase=your-secret\nticker=BINANCE:BTCUSDT.P\naction=buy\nprice=65000.5",
            },
        },
    }
}
_RESPONSES_DOC: dict[int | str, dict[str, Any]] = {
    200: {"description": "`published` after the broker confirmed, or `duplicate` (nothing published again)"},
    400: {"description": "Body unreadable"},
    401: {"description": "Secret missing or wrong"},
    403: {"description": "Client address not allowed"},
    413: {"description": "Body too large"},
    422: {"description": "A field is wrong (named in `errors`), or the alert is stale"},
    429: {"description": "Rate limit of the source exceeded (see Retry-After)"},
    503: {"description": "Redis or the broker unavailable"},
}


def create_app(
    settings: Any = None,
    *,
    publisher: SignalPublisher | None = None,
    redis_client: aioredis.Redis | None = None,
    metrics: WebhookMetrics | None = None,
    tune_gc: bool = False,
) -> FastAPI:
    """The webhook app. `settings` defaults to `phoenix95.settings.get_settings()`; a publisher or
    Redis client given here is used as is (and not closed by the app). `tune_gc` (for a process that
    only serves the webhook) moves everything loaded at start out of the garbage collector's reach,
    so that its full collections stay short."""
    if settings is None:
        from phoenix95.settings import get_settings

        settings = get_settings()
    config = WebhookConfig.from_settings(settings.webhook)
    owns_publisher = publisher is None
    owns_redis = redis_client is None
    publisher = publisher or SignalPublisher.from_settings(
        settings, producer_name="webhook", timeout=max(settings.webhook.publish_timeout_s, 1.0), client_id="p95-webhook"
    )
    redis_client = redis_client or aioredis.Redis.from_url(
        settings.redis_url(), socket_timeout=0.5, socket_connect_timeout=0.5, health_check_interval=30
    )
    guard = AlertGuard(
        redis_client,
        prefix=settings.redis.prefix,
        limit_per_minute=settings.webhook.rate_limit_per_minute,
        replay_window_s=settings.webhook.replay_window_s,
    )
    metrics = metrics or WebhookMetrics()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await publisher.start()
        if tune_gc:
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            if owns_publisher:
                await publisher.stop()
            if owns_redis:
                await redis_client.aclose()

    app = FastAPI(
        title="Phoenix95 signal webhook",
        version="1",
        description=_DESCRIPTION,
        lifespan=lifespan,
    )
    handler = _AlertHandler(config, publisher, guard, metrics)

    @app.post(SIGNAL_PATH, summary="Publish one alert as a signal", openapi_extra=_BODY_DOC, responses=_RESPONSES_DOC)
    async def receive_signal(request: Request) -> Response:
        return await handler.handle(request)

    # The hot path: a plain Starlette route in front of the FastAPI one (which stays for the OpenAPI
    # description) skips FastAPI's per-request machinery, ~0.1 ms of CPU per alert.
    app.router.routes.insert(0, Route(SIGNAL_PATH, handler.handle, methods=["POST"]))

    @app.get("/health", summary="Broker and Redis reachability")
    async def health() -> JSONResponse:
        broker = await publisher.ping(timeout=1.0)
        try:
            store = bool(await redis_client.ping())
        except Exception:
            store = False
        body = {"status": "ok" if broker and store else "unavailable", "broker": broker, "redis": store}
        return JSONResponse(body, status_code=200 if broker and store else 503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


class _AlertHandler:
    def __init__(self, config: WebhookConfig, publisher: SignalPublisher, guard: AlertGuard, metrics: WebhookMetrics):
        self.config = config
        self.publisher = publisher
        self.guard = guard
        self.metrics = metrics

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        outcome, source, response = await self._handle(request, started)
        self.metrics.observe(outcome, source, time.perf_counter() - started)
        return response

    async def _handle(self, request: Request, started: float) -> tuple[Outcome, str | None, Response]:
        config = self.config
        body = await _read_body(request, config.max_body_bytes)
        if body is None:
            return (
                "too_large",
                None,
                _answer(413, "too_large", f"the body is larger than {config.max_body_bytes} bytes"),
            )
        peer = request.client.host if request.client else None
        client = client_address(peer, request.headers.get("x-forwarded-for"), config.trusted_proxies)
        if config.allow and (client is None or not _within(client, config.allow)):
            logger.warning("webhook: refused client %s (not in allow_ips)", client)
            return "forbidden", None, _answer(403, "forbidden", "this address may not send alerts")
        try:
            payload = parse_alert(body, request.headers.get("content-type"))
        except UnreadableAlert as error:
            return "malformed", None, _answer(400, "malformed", str(error), error.errors)
        source = config.secrets.source_for(presented_secret(request.headers, payload))
        if source is None:
            logger.warning("webhook: refused an alert from %s: secret missing or wrong", client)
            return "unauthorized", None, _answer(401, "unauthorized", "secret missing or wrong")
        now = time.time()
        try:
            signal = build_alert_signal(payload, producer="webhook", signal_id=new_id(), source=signal_source(source))
        except InvalidSignal as error:
            return await self._rejected(source, now, "invalid", error)
        problem = age_problem(signal, now, config.max_alert_age_s)
        if problem is not None:
            return await self._rejected(source, now, "stale", InvalidSignal([("source_timestamp", problem)]))
        guard = self.guard.guard_keys(source, alert_digest(payload), _own_signal_id(payload, signal))
        try:
            admission = await self.guard.admit(source, now, guard=guard, signal_id=signal.signal_id)
        except Exception as error:
            logger.error("webhook: Redis unavailable (%s); refusing alerts", error)
            return "unavailable", source, _answer(503, "unavailable", "the replay and rate-limit store is unavailable")
        if admission.verdict == "rate_limited":
            return "rate_limited", source, _rate_limited(now)
        if admission.verdict == "duplicate":
            body_out = {"status": "duplicate", "signal_id": admission.first_signal_id}
            return "duplicate", source, JSONResponse(body_out, status_code=200)
        return await self._publish(signal, source, guard, started)

    async def _rejected(
        self, source: str, now: float, outcome: Outcome, error: InvalidSignal
    ) -> tuple[Outcome, str, Response]:
        try:  # an invalid alert still counts against the source's rate limit
            admission = await self.guard.admit(source, now, guard=[], signal_id="")
        except Exception:
            admission = None
        if admission is not None and admission.verdict == "rate_limited":
            return "rate_limited", source, _rate_limited(now)
        return outcome, source, _answer(422, outcome, str(error), error.errors)

    async def _publish(
        self, signal: Signal, source: str, guard: list[str], started: float
    ) -> tuple[Outcome, str, Response]:
        budget = max(0.05, self.config.publish_timeout_s - (time.perf_counter() - started))
        publish_started = time.perf_counter()
        try:
            published = (await self.publisher.send([signal], timeout=budget))[0]
        except PublishError as error:
            logger.error("webhook: signal %s not published: %s", signal.signal_id, error)
            try:
                await self.guard.release(guard)
            except Exception:
                logger.warning("webhook: could not release the replay guard of %s", signal.signal_id)
            return "unavailable", source, _answer(503, "unavailable", "the broker did not confirm the signal")
        self.metrics.publish_seconds.observe(time.perf_counter() - publish_started)
        logger.debug("webhook: published %s from %s at offset %s", signal.signal_id, source, published.offset)
        body = {
            "status": "published",
            "signal_id": signal.signal_id,
            "partition": published.partition,
            "offset": published.offset,
        }
        return "published", source, JSONResponse(body, status_code=200)


def _own_signal_id(payload: Mapping[str, Any], signal: Signal) -> str | None:
    """The signal id the alert brought itself (not one we generated)."""
    return signal.signal_id if any(key in payload for key in ("signal_id", "id")) else None


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is larger than `limit` (decided from Content-Length when sent)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(status: int, outcome: str, detail: str, errors: list[tuple[str, str]] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"status": outcome, "detail": detail}
    if errors:
        body["errors"] = [{"field": name, "message": message} for name, message in errors]
    return JSONResponse(body, status_code=status)


def _rate_limited(now: float) -> JSONResponse:
    response = _answer(429, "rate_limited", "too many alerts from this source; see Retry-After")
    response.headers["Retry-After"] = str(retry_after(now))
    return response


__all__ = [
    "IP_PRESETS",
    "TRADINGVIEW_IPS",
    "AlertGuard",
    "SecretBook",
    "WebhookMetrics",
    "age_problem",
    "client_address",
    "create_app",
    "parse_networks",
    "retry_after",
]
