"""A symbol's recent prices kept as they arrived, each decoded only when something looks at it.

The execution stage reads every price to find, for an order, the first price at or after its decision
time, and only a few prices are ever looked at. `LazyPriceHistory` keeps each price as the event time
read from its head and its undecoded payload; `decode` turns a payload into a tick, or None for a
payload that is not a valid price. It answers exactly what a `PriceHistory` holding the valid prices
(decoded on arrival) answers:

- a payload found invalid when it is decoded is removed, as if it had never been kept;
- a price is kept only when it is later than the last *valid* one: an undecoded entry at the end that
  is not earlier than the new price is decoded first (and removed if invalid) before deciding.

One difference remains: trimming counts the entries kept, decoded or not, so where invalid payloads
are among them the window holds fewer valid prices than a `PriceHistory` of the same `maxlen` would
(the two agree on every stream of valid prices).

Times are microseconds since the epoch (`micros`), as `Codec.peek` reads them.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from phoenix95.domain.execution import MarketTick

P = TypeVar("P")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def micros(time: datetime) -> int:
    """A timezone-aware time as microseconds since the epoch (exact)."""
    return (time - _EPOCH) // _MICROSECOND


class LazyPriceHistory(Generic[P]):
    """Prices in event-time order (strictly later ones only), at most about `maxlen` of them."""

    __slots__ = ("_decode", "_items", "_times", "maxlen", "trimmed")

    def __init__(self, decode: Callable[[P], MarketTick | None], maxlen: int = 5000):
        self._decode = decode
        self.maxlen = max(1, maxlen)
        self._items: list[MarketTick | P] = []
        self._times: list[int] = []
        #: Older entries were dropped: a time before the first one may have had a price.
        self.trimmed = False

    def __len__(self) -> int:
        """Entries kept, decoded or not."""
        return len(self._items)

    def append(self, time: int, item: MarketTick | P) -> bool:
        """Keep a price (a decoded tick, or a payload read at event time `time`) if it is later than the
        last valid one; returns whether it was kept."""
        times, items = self._times, self._items
        while times and time <= times[-1] and not isinstance(items[-1], MarketTick):
            if self._resolve(len(items) - 1) is not None:
                break
        if times and time <= times[-1]:
            return False
        items.append(item)
        times.append(time)
        if len(items) > self.maxlen + self.maxlen // 2:  # trim in steps: amortized O(1)
            drop = len(items) - self.maxlen
            del items[:drop]
            del times[:drop]
            self.trimmed = True
        return True

    def at_or_after(self, time: int) -> MarketTick | None:
        """The first valid price at or after `time`."""
        index = bisect.bisect_left(self._times, time)
        while index < len(self._items):
            tick = self._resolve(index)
            if tick is not None:
                return tick
        return None

    def first(self) -> MarketTick | None:
        while self._items:
            tick = self._resolve(0)
            if tick is not None:
                return tick
        return None

    def last(self) -> MarketTick | None:
        while self._items:
            tick = self._resolve(len(self._items) - 1)
            if tick is not None:
                return tick
        return None

    def _resolve(self, index: int) -> MarketTick | None:
        """The tick at `index`, decoded now if it was not; an invalid payload is removed (None)."""
        item = self._items[index]
        if isinstance(item, MarketTick):
            return item
        tick = self._decode(item)
        if tick is None:
            del self._items[index]
            del self._times[index]
        else:
            self._items[index] = tick
        return tick
