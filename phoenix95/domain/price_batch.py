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

`to_apply` answers for all the positions of a symbol at once, without asking each one about most prices:
a price whose mark lies inside the marks of the symbol's earlier prices in the batch (an "interior"
price) is skippable for every position that qualifies, is not due, and whose marks in the batch were,
at the symbol's first interior price, exactly the symbol's marks so far (then they stay so: an
interior price changes neither, every other price is applied to it and extends both alike). Only the
others (near a level, never published, or due by then: "watched") are asked one by one.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Mapping, Sequence
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
    #: The indices whose mark lies inside the marks of the symbol's prices before them, and the range
    #: of those marks at the first of them.
    interior: set[int]
    first_interior_range: tuple[Decimal, Decimal] | None
    #: At interior prices: the position ids asked one by one (None until the first one), the ids
    #: passed by, and when each of those becomes due (then it is asked too).
    watched: set[str] | None = None
    passing: set[str] = field(default_factory=set)
    due: list[tuple[datetime, str]] = field(default_factory=list)
    #: Of the indices after the first interior one that are not interior: a new "high" or "low".
    extreme: dict[int, str] = field(default_factory=dict)
    #: position id passed by -> its kept new highest ("high") and lowest ("low") marks' ticks.
    kept: dict[str, dict[str, MarketTick]] = field(default_factory=dict)


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
            interior: set[int] = set()
            extreme: dict[int, str] = {}
            first_range = None
            low = high = found[0][1].mark
            for index, tick in found[1:-1]:
                mark = tick.mark
                if low <= mark <= high:
                    interior.add(index)
                    if first_range is None:
                        first_range = (low, high)
                elif mark > high:
                    high = mark
                    extreme[index] = "high"
                else:
                    low = mark
                    extreme[index] = "low"
            batch.symbols[symbol] = _Symbol(
                indices={index for index, _ in found[:-1]},
                last_index=found[-1][0],
                last_time=found[-1][1].time,
                low=min(values),
                high=max(values),
                interior=interior,
                first_interior_range=first_range,
                extreme=extreme,
            )
        return batch

    def to_apply(
        self, positions: Sequence[Position], index: int, tick: MarketTick, last_mark: Mapping[str, datetime]
    ) -> list[tuple[str, MarketTick]]:
        """What to apply at the batch's price `index` to the symbol's open `positions` (in their
        order): (position id, tick) pairs, in order. A position passed by (see the module) has the
        symbol's new highest or lowest marks kept for it instead, and applied (the older first) just
        before the next price that is applied to it: it reaches the state it would have had."""
        prices = self.symbols.get(tick.symbol)
        if prices is None:
            return [(p.position_id, tick) for p in positions]
        if index not in prices.indices:  # the symbol's last price before an order, or after one
            return [pair for p in positions for pair in (*self._kept(prices, p.position_id), (p.position_id, tick))]
        watched = prices.watched
        if watched is None:
            if index not in prices.interior:
                return [
                    (p.position_id, tick)
                    for p in positions
                    if not self.skippable(p, index, tick, last_mark.get(p.position_id))
                ]
            watched = prices.watched = self._watch(positions, prices, last_mark)
        due = prices.due
        while due and due[0][0] <= tick.time:
            watched.add(heapq.heappop(due)[1])
        passing, extreme = prices.passing, prices.extreme.get(index)
        apply: list[tuple[str, MarketTick]] = []
        for p in positions:
            pid = p.position_id
            if pid in watched and pid in passing:  # it was due: once published, passed by until due again
                mark = last_mark.get(pid)
                if mark is not None and tick.time - mark < self.mark_interval and pid not in prices.kept:
                    watched.discard(pid)
                    heapq.heappush(due, (mark + self.mark_interval, pid))
            if pid in passing and pid not in watched:
                if extreme is not None:
                    prices.kept.setdefault(pid, {})[extreme] = tick
                continue
            kept = self._kept(prices, pid)
            if kept or not self.skippable(p, index, tick, last_mark.get(pid)):
                apply.extend(kept)
                apply.append((pid, tick))
        return apply

    def _kept(self, prices: _Symbol, position_id: str) -> list[tuple[str, MarketTick]]:
        """The highest and lowest marks kept for a position passed by, the older first (forgotten)."""
        kept = prices.kept.pop(position_id, None)
        if not kept:
            return []
        return [(position_id, tick) for tick in sorted(kept.values(), key=lambda t: t.time)]

    def _watch(self, positions: Sequence[Position], prices: _Symbol, last_mark: Mapping[str, datetime]) -> set[str]:
        """At the symbol's first interior price: the positions to ask one by one; the others are passed
        by and go on `prices.due` by the time they become due (an upper bound: a later publication
        only delays it)."""
        watched: set[str] = set()
        for position in positions:
            pid = position.position_id
            mark = last_mark.get(pid)
            # marked at exactly the symbol's marks so far: from here on its marks are the symbol's
            if (
                mark is None
                or self._marked.get(pid) != prices.first_interior_range
                or not self._quiet_of(position, prices)
            ):
                watched.add(pid)
            else:
                prices.passing.add(pid)
                heapq.heappush(prices.due, (mark + self.mark_interval, pid))
        return watched

    def _quiet_of(self, position: Position, prices: _Symbol) -> bool:
        quiet = self._quiet.get(position.position_id)
        if quiet is None:
            quiet = self._quiet[position.position_id] = _quiet(position, prices)
        return quiet

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
        return self._quiet_of(position, prices)

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
