"""Binance USDⓈ-M REST through ccxt's async ``binanceusdm``: signing (HMAC-SHA256, ``timestamp``,
``recvWindow``) is ccxt's; this module adds what live trading needs around it:

- a request-weight limiter that follows ``X-MBX-USED-WEIGHT-1M``, honours ``Retry-After`` after a 429
  (never calling before it expires: that is what turns a 429 into a 418 ban) and halts on a 418;
- a server-time offset (``/fapi/v1/time``) fed to ccxt's nonce, re-synced on ``-1021``, with an alarm
  metric when the local clock drifts more than ``max_clock_drift_s``;
- error classification: *definite* rejections (the request was not executed) versus *ambiguous* ones
  (timeout, connection lost, 5xx, ``-1006``/``-1007``, a malformed answer), after which an order's
  fate is only known by asking for it.

The endpoints are called through ccxt's implicit API methods (``fapiPrivatePostOrder``,
``fapiPrivatePostAlgoOrder``...): the unified ``create_order`` loads every market first and, for
conditional types, ccxt's fetch and cancel may miss the Algo Order API (see ../shared/NOTES.md).
Demo trading uses ``enable_demo_trading(True)``; ``set_sandbox_mode`` no longer works for futures.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import Any

from prometheus_client import Counter, Gauge

from phoenix95.settings import ExchangeSettings

logger = logging.getLogger(__name__)

CLOCK_DRIFT = Gauge("p95_exchange_clock_drift_seconds", "Local clock minus the exchange's server time")
CLOCK_ALARM = Gauge("p95_exchange_clock_drift_alarm", "1 while the local clock drifts more than allowed")
WEIGHT_USED = Gauge("p95_exchange_request_weight_used", "Request weight used in the current minute (exchange header)")
REQUESTS = Counter("p95_exchange_requests_total", "Exchange REST requests by outcome", ["outcome"])

_CODE = re.compile(r'"code"\s*:\s*"?(-?\d+)')
_STATUS = re.compile(r"\b(4\d\d|5\d\d)\b")


class ExchangeError(Exception):
    """A definite answer: the request was not executed (bad key, rejected order, ...)."""

    def __init__(self, message: str, *, code: int | None = None, status: int | None = None):
        super().__init__(message)
        self.code = code
        self.status = status


class AmbiguousResponse(Exception):
    """The request may or may not have been executed: resolve by query, never by re-sending."""


class ExchangeHalted(Exception):
    """The exchange banned this IP (418) or the connector was halted: nothing is sent."""


class AuthError(ExchangeError):
    """Wrong or missing key, or a key without the permission (-2015, -1022, 401)."""


@dataclass(frozen=True)
class SymbolFilters:
    symbol: str
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    min_notional: Decimal

    def quantity(self, value: Decimal) -> Decimal:
        """Rounded down to the step (never more than risk sized)."""
        return ((value / self.step_size).to_integral_value(rounding=ROUND_DOWN) * self.step_size).normalize()

    def price(self, value: Decimal) -> Decimal:
        return ((value / self.tick_size).to_integral_value(rounding=ROUND_HALF_UP) * self.tick_size).normalize()


def parse_filters(info: dict[str, Any]) -> dict[str, SymbolFilters]:
    out = {}
    for entry in info.get("symbols", []):
        filters = {f.get("filterType"): f for f in entry.get("filters", [])}
        try:
            out[entry["symbol"]] = SymbolFilters(
                symbol=entry["symbol"],
                tick_size=Decimal(filters["PRICE_FILTER"]["tickSize"]),
                step_size=Decimal(filters["LOT_SIZE"]["stepSize"]),
                min_qty=Decimal(filters["LOT_SIZE"]["minQty"]),
                min_notional=Decimal(filters.get("MIN_NOTIONAL", {}).get("notional", "0")),
            )
        except (KeyError, ArithmeticError):
            logger.warning("exchangeInfo: %s has no usable filters", entry.get("symbol"))
    return out


def plain(value: Decimal) -> str:
    """A decimal as Binance wants it: no exponent, no trailing zeros."""
    text = format(value.normalize(), "f")
    return text


class BinanceRest:
    def __init__(
        self,
        settings: ExchangeSettings,
        *,
        on_halt: Callable[[str], Awaitable[None]] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        import ccxt.async_support as ccxt

        self.settings = settings
        self.client = ccxt.binanceusdm(
            {
                "apiKey": settings.api_key.get_secret_value(),
                "secret": settings.api_secret.get_secret_value(),
                "enableRateLimit": False,  # our limiter follows the exchange's own weight headers
                "timeout": int(settings.request_timeout_s * 1000),
                "options": {"recvWindow": settings.recv_window_ms, "adjustForTimeDifference": False},
            }
        )
        if settings.kind == "binance-demo":
            self.client.enable_demo_trading(True)
        if settings.base_url:
            base = settings.base_url.rstrip("/")
            api = dict(self.client.urls["api"])
            for name in list(api):
                if name.startswith("fapi"):
                    version = {"fapiPrivateV2": "v2", "fapiPrivateV3": "v3"}.get(name, "v1")
                    api[name] = f"{base}/futures/data" if name == "fapiData" else f"{base}/fapi/{version}"
                elif name.startswith("sapi"):
                    api[name] = f"{base}/sapi/v1"
            api["sapi"] = f"{base}/sapi/v1"  # the key's permissions (the demo URL set has no sapi)
            self.client.urls["api"] = api
        self.on_halt = on_halt
        self._sleep = sleep
        self.offset_ms = 0.0
        self.weight_used = 0
        self.weight_limit = 2400
        self.retry_until = 0.0
        self.halted: str | None = None
        self.synced = False
        self.requests = 0

    async def close(self) -> None:
        await self.client.close()

    # -- clock -----------------------------------------------------------------------------------

    async def sync_time(self) -> float:
        """Measure the server-time offset (ms, server minus local) and use it for every signature."""
        before = time.time() * 1000
        answer = await self._raw("fapiPublicGetTime", {}, weight=1, resync=False)
        after = time.time() * 1000
        server = float(answer["serverTime"])
        self.offset_ms = server - (before + after) / 2
        self.client.options["timeDifference"] = -int(self.offset_ms)
        drift = -self.offset_ms / 1000
        CLOCK_DRIFT.set(drift)
        alarm = abs(drift) > self.settings.max_clock_drift_s
        CLOCK_ALARM.set(1 if alarm else 0)
        if alarm:
            logger.warning(
                "exchange clock: local clock is off by %.3f s (more than %.1f s)",
                drift,
                self.settings.max_clock_drift_s,
            )
        self.synced = True
        return self.offset_ms

    def server_ms(self) -> int:
        return int(time.time() * 1000 + self.offset_ms)

    # -- requests --------------------------------------------------------------------------------

    async def call(self, method: str, params: dict[str, Any] | None = None, *, weight: int = 1) -> Any:
        """One request that is safe to repeat (reads, cancels, settings): re-sent once after a -1021
        (re-synced) or a 429 (after Retry-After)."""
        if not self.synced:
            await self.sync_time()
        try:
            return await self._raw(method, dict(params or {}), weight=weight)
        except ExchangeError as error:
            if error.code == -1003 or error.status == 429:
                await self._wait_retry_after()
                return await self._raw(method, dict(params or {}), weight=weight)
            raise

    async def create(self, method: str, params: dict[str, Any], *, weight: int = 1) -> Any:
        """A create (order, algo order): sent once. A -1021 or 429 answer is a definite rejection
        (nothing was executed) and is raised as such; the caller decides, after asking the exchange."""
        if not self.synced:
            await self.sync_time()
        return await self._raw(method, dict(params), weight=weight, resync=True)

    async def _wait_retry_after(self) -> None:
        delay = self.retry_until - time.monotonic()
        if delay > 0:
            await self._sleep(delay)

    async def _raw(self, method: str, params: dict[str, Any], *, weight: int, resync: bool = True) -> Any:
        import ccxt.async_support as ccxt

        if self.halted:
            raise ExchangeHalted(self.halted)
        now = time.monotonic()
        if now < self.retry_until:
            await self._sleep(self.retry_until - now)
        if self.weight_used + weight > self.weight_limit * self.settings.weight_headroom:
            # Close to the limit: wait for the next minute rather than be answered 429.
            pause = 60 - (time.time() % 60) + 0.05
            logger.warning(
                "exchange: request weight %d of %d used, pausing %.1f s", self.weight_used, self.weight_limit, pause
            )
            await self._sleep(pause)
            self.weight_used = 0
        self.requests += 1
        try:
            answer = await getattr(self.client, method)(params)
        except ccxt.BaseError as error:
            self._headers()
            return await self._failed(method, params, error, weight=weight, resync=resync)
        self._headers()
        REQUESTS.labels("ok").inc()
        return answer

    def _headers(self) -> dict[str, str]:
        headers = {k.lower(): v for k, v in (self.client.last_response_headers or {}).items()}
        used = headers.get("x-mbx-used-weight-1m")
        if used is not None and used.isdigit():
            self.weight_used = int(used)
            WEIGHT_USED.set(self.weight_used)
        return headers

    async def _failed(self, method: str, params: dict[str, Any], error: Exception, *, weight: int, resync: bool) -> Any:
        import ccxt.async_support as ccxt

        text = str(error)
        match = _CODE.search(text)
        code = int(match.group(1)) if match else None
        headers = self._headers()
        status_match = _STATUS.search(text.split("{", 1)[0])
        status = int(status_match.group(1)) if status_match else None
        if isinstance(error, ccxt.DDoSProtection) and status is None:
            status = 418 if " 418 " in text else 429
        retry_after = headers.get("retry-after")
        if status == 418:
            REQUESTS.labels("banned").inc()
            reason = f"Binance banned this IP (418, Retry-After {retry_after or '?'} s): trading halted"
            await self.halt(reason)
            raise ExchangeHalted(reason) from error
        if status == 429 or code == -1003:
            REQUESTS.labels("rate_limited").inc()
            seconds = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else 1.0
            self.retry_until = time.monotonic() + seconds
            logger.warning("exchange: 429 on %s, not calling again for %.1f s (Retry-After)", method, seconds)
            raise ExchangeError(text, code=code or -1003, status=429) from error
        if code == -1021:
            REQUESTS.labels("clock").inc()
            await self.sync_time()
            if resync:
                return await self._raw(method, params, weight=weight, resync=False)
            raise ExchangeError(text, code=code, status=400) from error
        if code in (-1006, -1007) or isinstance(error, ccxt.NetworkError | ccxt.BadResponse | ccxt.NullResponse):
            REQUESTS.labels("ambiguous").inc()
            raise AmbiguousResponse(f"{method}: {_short(text)}") from error
        if status is not None and status >= 500:
            REQUESTS.labels("ambiguous").inc()
            raise AmbiguousResponse(f"{method}: {_short(text)}") from error
        if code in (-2015, -1022, -2014, -2008) or isinstance(error, ccxt.AuthenticationError | ccxt.PermissionDenied):
            REQUESTS.labels("auth").inc()
            raise AuthError(_short(text), code=code, status=status or 401) from error
        REQUESTS.labels("rejected").inc()
        raise ExchangeError(_short(text), code=code, status=status) from error

    async def halt(self, reason: str) -> None:
        first = self.halted is None
        self.halted = reason
        logger.error("exchange: %s", reason)
        if first and self.on_halt is not None:
            await self.on_halt(reason)


def _short(text: str) -> str:
    return text.replace("\n", " ")[:300]
