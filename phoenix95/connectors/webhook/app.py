"""The FastAPI app: `WebhookConfig`, `create_app` and the handler that runs the checks in order."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.routing import Route

from phoenix95.connectors.publisher import PublishError, SignalPublisher
from phoenix95.connectors.webhook.access import (
    Network,
    SecretBook,
    _within,
    client_address,
    parse_networks,
    presented_secret,
    signal_source,
)
from phoenix95.connectors.webhook.alerts import UnreadableAlert, alert_digest, build_alert_signal, parse_alert
from phoenix95.connectors.webhook.guard import AlertGuard, age_problem, retry_after
from phoenix95.connectors.webhook.metrics import RequestOutcome, WebhookMetrics
from phoenix95.schemas.envelope import new_id
from phoenix95.schemas.messages import Signal
from phoenix95.schemas.signal_input import InvalidSignal

# The package's name, as before the split into modules: log lines keep their logger name.
logger = logging.getLogger(__package__)

SIGNAL_PATH = "/webhook/signal"


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

    async def _handle(self, request: Request, started: float) -> tuple[RequestOutcome, str | None, Response]:
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
        self, source: str, now: float, outcome: RequestOutcome, error: InvalidSignal
    ) -> tuple[RequestOutcome, str, Response]:
        try:  # an invalid alert still counts against the source's rate limit
            admission = await self.guard.admit(source, now, guard=[], signal_id="")
        except Exception:
            admission = None
        if admission is not None and admission.verdict == "rate_limited":
            return "rate_limited", source, _rate_limited(now)
        return outcome, source, _answer(422, outcome, str(error), error.errors)

    async def _publish(
        self, signal: Signal, source: str, guard: list[str], started: float
    ) -> tuple[RequestOutcome, str, Response]:
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
