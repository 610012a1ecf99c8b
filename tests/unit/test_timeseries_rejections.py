"""The time-series sink against a store that behaves like InfluxDB OSS 2: a request with one malformed
point is rejected whole (400). The sink narrows the rejection down, so only that point is lost; the
store's configuration errors (a missing bucket, a bad token) wait and retry instead of dropping
points."""

from __future__ import annotations

from typing import Any

import pytest

from phoenix95.storage.timeseries import TimeseriesSink, is_transient


class _ApiError(Exception):
    def __init__(self, status: int):
        super().__init__(f"HTTP {status}")
        self.status = status


class _AllOrNothingStore:
    """Accepts a request only if none of its lines is malformed (marked BAD here)."""

    def __init__(self, failures_first: list[int] | None = None):
        self.stored: dict[str, list[str]] = {}
        self.requests = 0
        self.failures_first = list(failures_first or [])

    async def write(self, *, bucket: str, org: str, record: list[str]) -> None:
        self.requests += 1
        if self.failures_first:
            raise _ApiError(self.failures_first.pop(0))
        if any("BAD" in entry for entry in record):
            raise _ApiError(400)
        self.stored.setdefault(bucket, []).extend(record)


def _sink(store: _AllOrNothingStore) -> TimeseriesSink:
    sink = TimeseriesSink("http://stand-in", token="t", org="o", bucket="s4_trading_data")
    sink._write_api = store
    return sink


def _lines(count: int, measurement: str = "s4_price_data") -> list[str]:
    return [f"{measurement},symbol=S{index} price={index} {1_700_000_000 + index}000000000" for index in range(count)]


async def test_one_malformed_point_in_a_batch_loses_only_that_point():
    store = _AllOrNothingStore()
    sink = _sink(store)
    lines = _lines(1000)
    lines[617] = "s4_price_data,symbol=BAD price= 1"
    written = await sink.write_lines(lines)
    assert written == 999 and sink.points_written == 999 and sink.points_rejected == 1
    assert sorted(store.stored["s4_trading_data"]) == sorted(lines[:617] + lines[618:])
    assert store.requests <= 1 + 2 * 10  # halving: about two requests per level, ten levels for 1,000 lines


async def test_bad_points_in_two_buckets_are_isolated_in_each():
    store = _AllOrNothingStore()
    sink = _sink(store)
    sink.buckets = {"s4_price_data": "s4_market_data", "s4_risk_metrics": "s4_risk_metrics"}
    prices, risk = _lines(50), _lines(30, "s4_risk_metrics")
    prices[0] = prices[0].replace("symbol=S0", "symbol=BAD")
    risk[29] = risk[29].replace("symbol=S29", "symbol=BAD")
    assert await sink.write_lines(prices + risk) == 78
    assert len(store.stored["s4_market_data"]) == 49 and len(store.stored["s4_risk_metrics"]) == 29
    assert sink.points_rejected == 2


@pytest.mark.parametrize("status", [401, 403, 404, 429, 500, 503])
async def test_a_store_misconfigured_or_down_is_waited_for_not_dropped(status):
    store = _AllOrNothingStore(failures_first=[status, status])
    sink = _sink(store)
    retried: list[Any] = []
    sink.on_retry = lambda attempt, error: retried.append(error)
    assert await sink.write_lines(_lines(10)) == 10
    assert len(store.stored["s4_trading_data"]) == 10 and sink.points_rejected == 0
    assert [error.status for error in retried] == [status, status]


def test_only_rejected_requests_are_permanent():
    assert not is_transient(_ApiError(400)) and not is_transient(_ApiError(413))
    assert all(is_transient(_ApiError(status)) for status in (401, 403, 404, 408, 429, 500, 502, 503))
    assert is_transient(ConnectionResetError()) and is_transient(TimeoutError())
