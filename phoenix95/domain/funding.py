"""Funding rates: from recorded funding data when given, else the configured default."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal

#: A recorded rate applies to a funding time within this tolerance (Binance stamps are a few ms late).
_MATCH_TOLERANCE = timedelta(minutes=1)


class FundingSchedule:
    def __init__(self, default_rate: Decimal, recorded: Mapping[str, Iterable[tuple[datetime, Decimal]]] | None = None):
        self.default_rate = default_rate
        self._times: dict[str, list[datetime]] = {}
        self._rates: dict[str, list[Decimal]] = {}
        for symbol, rows in (recorded or {}).items():
            self.add(symbol, rows)

    def add(self, symbol: str, rows: Iterable[tuple[datetime, Decimal]]) -> None:
        merged = dict(zip(self._times.get(symbol, []), self._rates.get(symbol, []), strict=True))
        merged.update(rows)
        times = sorted(merged)
        self._times[symbol] = times
        self._rates[symbol] = [merged[t] for t in times]

    def rate(self, symbol: str, at: datetime) -> Decimal:
        times = self._times.get(symbol)
        if times:
            index = bisect.bisect_left(times, at - _MATCH_TOLERANCE)
            if index < len(times) and abs(times[index] - at) <= _MATCH_TOLERANCE:
                return self._rates[symbol][index]
        return self.default_rate

    def __call__(self, symbol: str, at: datetime) -> Decimal:
        return self.rate(symbol, at)
