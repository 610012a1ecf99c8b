"""Time series: the seed's four measurements, written with influxdb-client in batches.

=====================  ==================================================  ===========================
measurement            tags                                                fields
=====================  ==================================================  ===========================
``s4_price_data``      symbol, exchange, market_type, source               price, mark_price, volume,
                                                                           open, high, low
``s4_trade_metrics``   symbol, side, leverage, margin_mode, exchange,      position_size, entry_price,
                       event (open/close/tick), close_reason               exit_price, pnl, pnl_percent,
                                                                           roe, fees_paid, slippage,
                                                                           phoenix95_score, confidence,
                                                                           distance_to_liquidation
``s4_risk_metrics``    portfolio_id, risk_model, symbol                    var_1d_95, total_value,
                                                                           leverage_ratio,
                                                                           kelly_fraction,
                                                                           position_fraction
``s4_system_metrics``  service, host, environment                          cpu_percent, memory_percent,
                                                                           memory_used_mb, events_per_s
=====================  ==================================================  ===========================

Points carry event-time timestamps, so a replayed event overwrites its own point. With a namespace
(tests, replays) every point gets an ``ns`` tag. Values are floats: the time series is telemetry;
money of record lives in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from phoenix95.agents.ports import Fact, OrderPlaced, PositionChanged, PriceObserved, VerdictMade
from phoenix95.storage.retry import retry_transient

logger = logging.getLogger(__name__)

PRICE = "s4_price_data"
TRADE = "s4_trade_metrics"
RISK = "s4_risk_metrics"
SYSTEM = "s4_system_metrics"
MEASUREMENTS = (PRICE, TRADE, RISK, SYSTEM)


def _escape_key(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _escape_measurement(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace(" ", "\\ ")


def line(measurement: str, tags: Mapping[str, Any], fields: Mapping[str, Any], time: datetime) -> str | None:
    """One line of InfluxDB line protocol (nanosecond precision); None when no field has a value."""
    field_parts = []
    for key, value in fields.items():
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int):
            text = f"{value}i"
        elif isinstance(value, float | Decimal):
            text = repr(float(value))
        else:
            text = '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
        field_parts.append(f"{_escape_key(key)}={text}")
    if not field_parts:
        return None
    tag_parts = "".join(
        f",{_escape_key(key)}={_escape_key(str(value))}"
        for key, value in sorted(tags.items())
        if value not in (None, "")
    )
    timestamp = int(time.timestamp()) * 1_000_000_000 + time.microsecond * 1000
    return f"{_escape_measurement(measurement)}{tag_parts} {','.join(field_parts)} {timestamp}"


def lines_for(fact: Fact, namespace: str = "") -> list[str]:
    extra = {"ns": namespace} if namespace else {}
    produced: list[str | None] = []
    if isinstance(fact, PriceObserved):
        p = fact.price
        produced.append(
            line(
                PRICE,
                {"symbol": p.symbol, "exchange": p.exchange, "market_type": p.market_type, "source": p.source, **extra},
                {
                    "price": p.price,
                    "mark_price": p.mark_price,
                    "volume": p.volume,
                    "open": p.open,
                    "high": p.high,
                    "low": p.low,
                },
                p.ts_event,
            )
        )
    elif isinstance(fact, OrderPlaced) and fact.order.fill is not None:
        o, v, f = fact.order, fact.verdict, fact.order.fill
        produced.append(
            line(
                TRADE,
                {
                    "symbol": o.symbol,
                    "side": o.position_side,
                    "leverage": o.leverage,
                    "margin_mode": o.margin_mode,
                    "exchange": o.exchange,
                    "event": o.intent,
                    **extra,
                },
                {
                    "position_size": f.notional,
                    "entry_price": f.price if o.intent == "open" else None,
                    "exit_price": f.price if o.intent == "close" else None,
                    "fees_paid": f.fee,
                    "slippage": f.slippage_rate,
                    "phoenix95_score": v.phoenix95_score,
                    "confidence": v.final_confidence,
                },
                f.filled_at,
            )
        )
    elif isinstance(fact, PositionChanged):
        if not fact.published:
            return []
        e = fact.event
        closing = e.kind in ("closed", "liquidated", "expired")
        produced.append(
            line(
                TRADE,
                {
                    "symbol": e.symbol,
                    "side": e.side,
                    "leverage": e.leverage,
                    "margin_mode": e.margin_mode,
                    "exchange": "paper",
                    "event": "close" if closing else e.kind,
                    "close_reason": e.close_reason,
                    **extra,
                },
                {
                    "position_size": e.quantity * e.entry_price,
                    "entry_price": e.entry_price,
                    "exit_price": e.exit_price if closing else None,
                    "pnl": e.realized_pnl if closing else e.unrealized_pnl,
                    "pnl_percent": e.unrealized_pnl_percent,
                    "roe": e.roe,
                    "fees_paid": e.entry_fee + e.exit_fee,
                    "funding_paid": e.funding_paid,
                    "distance_to_liquidation": e.distance_to_liquidation,
                    "mark_price": e.mark_price,
                },
                e.ts_event,
            )
        )
    elif isinstance(fact, VerdictMade) and fact.verdict.plan is not None:
        v, plan = fact.verdict, fact.verdict.plan
        produced.append(
            line(
                RISK,
                {"portfolio_id": "paper", "risk_model": "var", "symbol": v.symbol, "decision": v.decision, **extra},
                {
                    "var_1d_95": plan.var_1d_95,
                    "total_value": plan.equity,
                    "leverage_ratio": (plan.notional / plan.equity) if plan.equity > 0 else None,
                    "kelly_fraction": plan.kelly,
                    "position_fraction": plan.position_fraction,
                    "free_margin": plan.free_margin,
                },
                v.ts_event,
            )
        )
    return [entry for entry in produced if entry is not None]


def system_line(
    service: str, host: str, environment: str, fields: Mapping[str, Any], time: datetime, namespace: str = ""
) -> str | None:
    tags = {"service": service, "host": host, "environment": environment}
    if namespace:
        tags["ns"] = namespace
    return line(SYSTEM, tags, fields, time)


class TimeseriesSink:
    """Batched writes through influxdb-client's async API. No URL: a no-op (warned once)."""

    def __init__(
        self,
        url: str | None,
        *,
        token: str,
        org: str,
        bucket: str,
        namespace: str = "",
        timeout_s: float = 10.0,
        buckets: dict[str, str] | None = None,
    ):
        self.url = url
        self.org = org
        self.bucket = bucket
        self.buckets = buckets or {}
        self.namespace = namespace
        self._client: Any = None
        self._write_api: Any = None
        self._token = token
        self._timeout_ms = int(timeout_s * 1000)
        self.points_written = 0
        #: Points the store rejected as malformed (logged one by one; the others are written).
        self.points_rejected = 0
        #: Called with (attempt, error) when a write is retried (the stage counts them).
        self.on_retry: Callable[[int, BaseException], None] | None = None
        if url is None:
            logger.warning("no time-series store configured (P95_INFLUX__URL): time-series points are not written")

    @property
    def enabled(self) -> bool:
        return self.url is not None

    async def _api(self) -> Any:
        if self._write_api is None:
            from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

            self._client = InfluxDBClientAsync(url=self.url, token=self._token, org=self.org, timeout=self._timeout_ms)
            self._write_api = self._client.write_api()
        return self._write_api

    async def write_facts(self, facts: Iterable[Fact]) -> int:
        lines = [entry for fact in facts for entry in lines_for(fact, self.namespace)]
        return await self.write_lines(lines)

    async def write_lines(self, lines: list[str]) -> int:
        if not self.enabled or not lines:
            return 0

        by_bucket: dict[str, list[str]] = {}
        for entry in lines:
            measurement = entry.split(",", 1)[0].split(" ", 1)[0]
            by_bucket.setdefault(self.buckets.get(measurement, self.bucket), []).append(entry)

        written = sum(
            await asyncio.gather(*(self._write_bucket(bucket, records) for bucket, records in by_bucket.items()))
        )
        self.points_written += written
        return written

    async def _write_bucket(self, bucket: str, records: list[str]) -> int:
        """Write the lines, waiting out transient failures. A permanent rejection (400: a malformed
        point; InfluxDB 2 then drops the whole request) is narrowed down by halves, so only the points
        it rejects are lost, each logged (rewriting the accepted ones is harmless: same series and
        event time). Returns the points written."""

        async def run() -> None:
            api = await self._api()
            await api.write(bucket=bucket, org=self.org, record=records)

        try:
            await retry_transient(run, what="time-series write", is_transient=is_transient, on_retry=self.on_retry)
            return len(records)
        except Exception as error:
            if getattr(error, "status", None) not in (400, 413):
                # Not about the points (our bug, a client error): halving would not find a culprit.
                self.points_rejected += len(records)
                logger.error("time-series write of %d points failed permanently: %r", len(records), error)
                return 0
            if len(records) == 1:
                self.points_rejected += 1
                logger.error("time-series store rejected a point permanently (%s): %.300s", error, records[0])
                return 0
        middle = len(records) // 2
        return await self._write_bucket(bucket, records[:middle]) + await self._write_bucket(bucket, records[middle:])

    async def ping(self) -> bool:
        if not self.enabled:
            return False
        try:
            await self._api()
            return bool(await self._client.ping())
        except Exception:
            return False

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
            self._write_api = None


def is_transient(error: BaseException) -> bool:
    """Server errors, throttling and the store's configuration (401/403: the token, 404: a bucket
    not created yet, see `p95 influx setup`) wait and retry, as the partition does; only a
    rejected request (400, 413) is about the points themselves."""
    status = getattr(error, "status", None)
    if isinstance(status, int):
        return status >= 500 or status in (401, 403, 404, 408, 429)
    return isinstance(error, OSError | ConnectionError | TimeoutError | asyncio.TimeoutError) or type(
        error
    ).__module__.startswith("aiohttp")
