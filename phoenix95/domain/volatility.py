"""One-day Value at Risk from recent price volatility (parametric, normal), in Decimal."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

#: One-sided z of the normal distribution at 95 % and 99 %.
Z_SCORES = {Decimal("0.95"): Decimal("1.6449"), Decimal("0.99"): Decimal("2.3263")}
MIN_RETURNS = 10
WINDOW = 300
_DAY = Decimal(86400)
_ZERO = Decimal(0)


class ReturnWindow:
    """The last `size` simple returns of one symbol's prices. Appending a price is O(1) (it is
    only queued); an estimate folds the queued prices into running sums, recomputing from scratch
    only when more than a window's worth arrived since the last one."""

    def __init__(self, size: int = WINDOW):
        self.size = size
        self.prices: deque[tuple[datetime, Decimal]] = deque(maxlen=size + 1)
        self.returns: deque[Decimal] = deque()
        self.total = _ZERO
        self.squares = _ZERO
        self.queued = 0

    @property
    def last_price(self) -> Decimal | None:
        return self.prices[-1][1] if self.prices else None

    def append(self, time: datetime, price: Decimal) -> None:
        if self.prices and time <= self.prices[-1][0]:
            return
        self.prices.append((time, price))
        self.queued += 1

    def _fold(self) -> None:
        if not self.queued:
            return
        prices = list(self.prices)
        if self.queued >= self.size:
            self.returns.clear()
            self.total = self.squares = _ZERO
            fresh = prices
        else:
            fresh = prices[-(self.queued + 1) :]
        for (_, previous), (_, current) in itertools.pairwise(fresh):
            if previous <= 0:
                continue
            change = (current - previous) / previous
            self.returns.append(change)
            self.total += change
            self.squares += change * change
        while len(self.returns) > self.size:
            old = self.returns.popleft()
            self.total -= old
            self.squares -= old * old
        self.queued = 0

    def daily_volatility(self) -> Decimal | None:
        """Standard deviation of the returns scaled to one day, or None with too little data."""
        self._fold()
        count = len(self.returns)
        if count < MIN_RETURNS:
            return None
        span = (
            self.prices[-1][0] - self.prices[-count - 1][0]
            if count < len(self.prices)
            else self.prices[-1][0] - self.prices[0][0]
        )
        if span.total_seconds() <= 0:
            return None
        mean = self.total / count
        variance = max(_ZERO, (self.squares - count * mean * mean) / (count - 1))
        interval = Decimal(str(span.total_seconds())) / count
        return (variance * (_DAY / interval)).sqrt()


def daily_volatility(prices: Sequence[tuple[datetime, Decimal]]) -> Decimal | None:
    window = ReturnWindow(size=max(len(prices), 1))
    for time, price in prices:
        window.append(time, price)
    return window.daily_volatility()


def value_at_risk(
    notional: Decimal, volatility: Decimal | None, *, confidence: Decimal = Decimal("0.95")
) -> Decimal | None:
    """Loss not exceeded with `confidence` over one day: notional x z x daily volatility."""
    if volatility is None:
        return None
    return abs(notional) * Z_SCORES[confidence] * volatility
