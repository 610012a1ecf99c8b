"""One-day Value at Risk from recent price volatility (parametric, normal), in Decimal."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal

#: One-sided z of the normal distribution at 95 % and 99 %.
Z_SCORES = {Decimal("0.95"): Decimal("1.6449"), Decimal("0.99"): Decimal("2.3263")}
MIN_RETURNS = 10
_DAY = Decimal(86400)


def daily_volatility(prices: Sequence[tuple[datetime, Decimal]]) -> Decimal | None:
    """Standard deviation of simple returns scaled to one day, or None with too little data."""
    if len(prices) < MIN_RETURNS + 1:
        return None
    returns = [
        (current - previous) / previous for (_, previous), (_, current) in itertools.pairwise(prices) if previous > 0
    ]
    if len(returns) < MIN_RETURNS:
        return None
    mean = sum(returns, Decimal(0)) / len(returns)
    variance = sum(((r - mean) ** 2 for r in returns), Decimal(0)) / (len(returns) - 1)
    span = prices[-1][0] - prices[0][0]
    if span <= timedelta(0):
        return None
    interval_seconds = Decimal(str(span.total_seconds())) / (len(prices) - 1)
    periods_per_day = _DAY / interval_seconds
    return (variance * periods_per_day).sqrt()


def value_at_risk(
    notional: Decimal,
    prices: Sequence[tuple[datetime, Decimal]],
    *,
    confidence: Decimal = Decimal("0.95"),
) -> Decimal | None:
    """Loss not exceeded with `confidence` over one day: notional x z x daily volatility."""
    volatility = daily_volatility(prices)
    if volatility is None:
        return None
    return abs(notional) * Z_SCORES[confidence] * volatility
