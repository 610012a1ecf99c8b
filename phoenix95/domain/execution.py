"""Paper execution model: market orders filled at the next market price with modelled slippage.

Slippage model (documented in the README):

    rate = base_slippage_rate + 0.1 x order notional / traded notional of the price event
    rate = min(rate, slippage_tolerance)

The traded notional is the event's volume x price; without volume only the base rate applies
(2 bps by default). Buys fill above the reference price, sells below; the fill price is rounded to the
tick against the trader. The taker fee is charged on the filled notional, on entry and on exit.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from phoenix95.domain.config import TradingConfig
from phoenix95.domain.values import ZERO, OrderSide, money, round_price

IMPACT_COEFFICIENT = Decimal("0.1")


class OrderRejectReason(StrEnum):
    """Why an order was not placed (an order's `reject_reason`; the values are stored and digested)."""

    TRADING_HALTED = "TRADING_HALTED"
    TRADING_REDUCING = "TRADING_REDUCING"
    NO_MARKET_DATA = "NO_MARKET_DATA"
    #: A close whose position is no longer open.
    POSITION_NOT_OPEN = "POSITION_NOT_OPEN"
    NO_QUANTITY = "NO_QUANTITY"
    #: The connector answered without the order (neither placed nor rejected by us).
    EXCHANGE_DID_NOT_ACCEPT = "EXCHANGE_DID_NOT_ACCEPT"
    # Live exchanges (the code and message of a refusal are in exchange_intents and the log):
    #: The exchange refused the order.
    EXCHANGE_REJECTED = "EXCHANGE_REJECTED"
    #: The answer was lost or ambiguous and the order not found yet: reconciliation settles it.
    EXCHANGE_STATUS_UNKNOWN = "EXCHANGE_STATUS_UNKNOWN"
    #: The exchange never got it (not known past its recvWindow); never sent again.
    EXCHANGE_NOT_PLACED = "EXCHANGE_NOT_PLACED"
    #: Banned (418) or halted: nothing is sent.
    EXCHANGE_HALTED = "EXCHANGE_HALTED"
    #: The symbol's margin type or leverage could not be set.
    EXCHANGE_SETUP_FAILED = "EXCHANGE_SETUP_FAILED"
    #: Below the symbol's minimum quantity or notional once rounded to its lot size.
    BELOW_EXCHANGE_MINIMUM = "BELOW_EXCHANGE_MINIMUM"


@dataclass(frozen=True)
class MarketTick:
    """A market price event as the domain sees it (last price, optional mark and candle range)."""

    symbol: str
    time: datetime
    price: Decimal
    mark_price: Decimal | None = None
    open: Decimal | None = None
    high: Decimal | None = None
    low: Decimal | None = None
    volume: Decimal | None = None
    funding_rate: Decimal | None = None
    event_id: str = ""

    @property
    def mark(self) -> Decimal:
        return self.mark_price if self.mark_price is not None else self.price


@dataclass(frozen=True)
class Fill:
    side: OrderSide
    price: Decimal
    quantity: Decimal
    notional: Decimal
    fee: Decimal
    slippage_rate: Decimal
    reference_price: Decimal
    time: datetime
    price_event_id: str = ""


def slippage_rate(
    notional: Decimal, reference_price: Decimal, volume: Decimal | None, config: TradingConfig
) -> Decimal:
    rate = config.base_slippage_rate
    if volume is not None and volume > 0 and reference_price > 0:
        rate += IMPACT_COEFFICIENT * notional / (volume * reference_price)
    return min(rate, config.slippage_tolerance)


def fill_market_order(
    *,
    side: OrderSide,
    quantity: Decimal,
    reference_price: Decimal,
    time: datetime,
    config: TradingConfig,
    tick_size: Decimal,
    volume: Decimal | None = None,
    price_event_id: str = "",
) -> Fill:
    if quantity <= 0:
        raise ValueError("quantity must be positive")
    if reference_price <= 0:
        raise ValueError("reference price must be positive")
    rate = slippage_rate(quantity * reference_price, reference_price, volume, config)
    if side == "buy":
        price = round_price(reference_price * (1 + rate), tick_size, up=True)
    else:
        price = round_price(reference_price * (1 - rate), tick_size, up=False)
    if price <= 0:
        price = tick_size
    notional = price * quantity
    return Fill(
        side=side,
        price=price,
        quantity=quantity,
        notional=notional,
        fee=money(notional * config.taker_fee_rate),
        slippage_rate=rate,
        reference_price=reference_price,
        time=time,
        price_event_id=price_event_id,
    )


class PriceHistory:
    """The recent prices of one symbol in event-time order (a later tick only), at most about
    `maxlen` of them, found by time in O(log n): a stage reading the prices topic runs ahead of the
    orders two hops behind it, so the tick an order wants can be thousands back."""

    __slots__ = ("_ticks", "_times", "maxlen", "trimmed")

    def __init__(self, maxlen: int = 5000):
        self.maxlen = max(1, maxlen)
        self._ticks: list[MarketTick] = []
        self._times: list[datetime] = []
        #: Older ticks were dropped: a time before the first one may have had a price.
        self.trimmed = False

    def append(self, tick: MarketTick) -> bool:
        """Keep `tick` if it is later than the last one; returns whether it was kept."""
        if self._times and tick.time <= self._times[-1]:
            return False
        self._ticks.append(tick)
        self._times.append(tick.time)
        if len(self._ticks) > self.maxlen + self.maxlen // 2:  # trim in steps: amortized O(1)
            drop = len(self._ticks) - self.maxlen
            del self._ticks[:drop]
            del self._times[:drop]
            self.trimmed = True
        return True

    def __len__(self) -> int:
        return len(self._ticks)

    def __iter__(self) -> Iterator[MarketTick]:
        return iter(self._ticks)

    def __reversed__(self) -> Iterator[MarketTick]:
        return reversed(self._ticks)

    def __getitem__(self, index: int) -> MarketTick:
        return self._ticks[index]

    def at_or_after(self, time: datetime) -> MarketTick | None:
        index = bisect.bisect_left(self._times, time)
        return self._ticks[index] if index < len(self._ticks) else None

    def after(self, time: datetime) -> list[MarketTick]:
        return self._ticks[bisect.bisect_right(self._times, time) :]


def next_price_at_or_after(prices: Sequence[MarketTick] | PriceHistory, time: datetime) -> MarketTick | None:
    """The first price event at or after `time` (prices in event-time order)."""
    if isinstance(prices, PriceHistory):
        return prices.at_or_after(time)
    found = None
    for tick in reversed(prices):
        if tick.time < time:
            break
        found = tick
    return found


def prices_after(prices: Sequence[MarketTick] | PriceHistory, time: datetime) -> list[MarketTick]:
    """The price events later than `time`, oldest first (prices in event-time order)."""
    if isinstance(prices, PriceHistory):
        return prices.after(time)
    later = []
    for tick in reversed(prices):
        if tick.time <= time:
            break
        later.append(tick)
    later.reverse()
    return later


def last_price_before(prices: Sequence[MarketTick], time: datetime) -> MarketTick | None:
    found = None
    for tick in prices:
        if tick.time > time:
            break
        found = tick
    return found


def fee(notional: Decimal, config: TradingConfig) -> Decimal:
    return money(abs(notional) * config.taker_fee_rate) if notional else ZERO
