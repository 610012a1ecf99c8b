"""Which prices of a batch can pass an open position by without changing anything it records.

Marking a position to market on a price (`positions.on_price`) either closes it (stop, target,
liquidation, expiry), charges funding, or only moves its last price, mark, event time and best/worst
ROE. A price of the second kind that is neither published (a tick due by `mark_interval`), nor the
symbol's last price of the batch, nor outside the range of marks the position has already been marked
at in the batch (so its ROE cannot be a new best or worst), leaves no trace: the next price overwrites
all it would have set. `BatchPrices` finds those prices, conservatively:

- the batch's prices of the symbol are taken up to its first order (an order reads the position's
  state), and only when their event times strictly increase (a repeated time is ignored by `on_price`,
  so skipping the price before it would change which one counts);
- a position qualifies only when nothing can happen to it in them: every open, high, low, last and mark
  price of the symbol's batch (and the position's own last price, where the first price path starts)
  lies strictly inside its stop/liquidation and its target, and the last event time is before its next
  funding time and its expiry.

So stop, target and liquidation crossings, funding and expiry come out exactly as with every price
applied, and every price that is applied finds the position in the same state.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from phoenix95.domain.execution import MarketTick
from phoenix95.domain.positions import Position
from phoenix95.domain.values import direction


@dataclass
class _Symbol:
    """The batch's prices of one symbol that may be skipped (by batch index), and their range."""

    indices: set[int]
    last_index: int
    last_time: datetime
    low: Decimal
    high: Decimal


@dataclass
class BatchPrices:
    mark_interval: timedelta
    symbols: dict[str, _Symbol] = field(default_factory=dict)
    #: position id -> whether nothing can happen to it in this batch (decided at its first price).
    _quiet: dict[str, bool] = field(default_factory=dict)
    #: position id -> (lowest, highest) mark it was marked at in this batch.
    _marked: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)

    @classmethod
    def of(cls, items: Sequence[MarketTick | str | None], mark_interval: timedelta) -> BatchPrices:
        """`items`: the batch in order, a tick for a price, the symbol for an order, None otherwise."""
        ticks: dict[str, list[tuple[int, MarketTick]]] = {}
        ordered: set[str] = set()
        for index, item in enumerate(items):
            if isinstance(item, str):
                ordered.add(item)
            elif item is not None and item.symbol not in ordered:
                ticks.setdefault(item.symbol, []).append((index, item))
        batch = cls(mark_interval)
        for symbol, found in ticks.items():
            if len(found) < 3 or any(a.time >= b.time for (_, a), (_, b) in itertools.pairwise(found)):
                continue
            values = [
                value
                for _, tick in found
                for value in (tick.price, tick.open, tick.high, tick.low, tick.mark_price)
                if value is not None
            ]
            batch.symbols[symbol] = _Symbol(
                indices={index for index, _ in found[:-1]},
                last_index=found[-1][0],
                last_time=found[-1][1].time,
                low=min(values),
                high=max(values),
            )
        return batch

    def skippable(self, position: Position, index: int, tick: MarketTick, last_mark: datetime | None) -> bool:
        """Whether applying `tick` (batch index `index`) to `position` would leave no trace;
        `last_mark`: event time of the position's last published tick."""
        prices = self.symbols.get(tick.symbol)
        if prices is None or index not in prices.indices or tick.time <= position.last_event_time:
            return False
        if last_mark is None or tick.time - last_mark >= self.mark_interval:
            return False  # due: published
        marked = self._marked.get(position.position_id)
        if marked is None or not marked[0] <= tick.mark <= marked[1]:
            return False
        quiet = self._quiet.get(position.position_id)
        if quiet is None:
            quiet = self._quiet[position.position_id] = _quiet(position, prices)
        return quiet

    def marked(self, position_id: str, tick: MarketTick) -> None:
        """`tick` was applied to the position as a plain mark."""
        mark = tick.mark
        seen = self._marked.get(position_id)
        self._marked[position_id] = (mark, mark) if seen is None else (min(seen[0], mark), max(seen[1], mark))


def _quiet(position: Position, prices: _Symbol) -> bool:
    """Nothing can happen to the position at any of the prices: no crossing, funding or expiry."""
    if prices.last_time >= position.next_funding_at or prices.last_time >= position.auto_close_at:
        return False
    adverse = [position.stop_loss_price] + ([position.liquidation_price] if position.liquidation_price > 0 else [])
    low = min(prices.low, position.last_price)
    high = max(prices.high, position.last_price)
    if direction(position.side) > 0:
        return low > max(adverse) and high < position.take_profit_price
    return high < min(adverse) and low > position.take_profit_price
