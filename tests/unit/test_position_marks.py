"""The positions stage marks every open position on every price, but publishes a mark-to-market tick
at most once per `mark_interval` of event time; lifecycle events are always published, and the
latest state of each position in a batch still reaches PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal
from itertools import pairwise

from phoenix95.agents.ports import InputRecord, PositionChanged
from phoenix95.agents.positions import PositionStage
from phoenix95.connectors.exchange.brackets import bundled_brackets
from phoenix95.domain.config import TradingConfig
from phoenix95.domain.positions import Position
from phoenix95.schemas import topics
from phoenix95.schemas.codec import Codec
from phoenix95.schemas.messages import Order, PositionEvent
from phoenix95.storage.timeseries import lines_for
from tests import factories
from tests.unit.samples import samples


class NoStoredPositions:
    async def open_positions(self) -> list[Position]:
        return []

    async def positions(self, position_ids: Sequence[str]) -> dict[str, Position]:
        return {}

    async def realized_pnl(self) -> Decimal:
        return Decimal(0)


def _record(topic: str, offset: int, value: bytes) -> InputRecord:
    return InputRecord(topic, 0, offset, None, b"BTCUSDT", value, ())


def _run(mark_interval: timedelta, prices: list[str], step: timedelta) -> list[PositionChanged]:
    codec = Codec()
    order = next(event for event in samples() if isinstance(event, Order))
    assert order.fill is not None
    stage = PositionStage(
        codec, TradingConfig(), bundled_brackets(), NoStoredPositions(), clock="event", mark_interval=mark_interval
    )
    records = [_record(topics.ORDERS, 0, codec.encode(order))]
    for index, value in enumerate(prices):
        tick = factories.price(symbol="BTCUSDT", value=value, at=order.fill.filled_at + step * (index + 1))
        records.append(_record(topics.MARKET_PRICES, index + 1, codec.encode(tick)))
    outcomes = asyncio.run(stage.process(records))
    changes = [fact for outcome in outcomes for fact in outcome.persist if isinstance(fact, PositionChanged)]
    produced = [event for outcome in outcomes for event in outcome.produce if isinstance(event, PositionEvent)]
    assert produced == [change.event for change in changes if change.published]
    return changes


def test_marks_on_prices_every_250ms_are_published_once_a_second():
    changes = _run(timedelta(seconds=1), ["60020"] * 12, timedelta(milliseconds=250))
    published = [c for c in changes if c.published]
    assert [c.event.kind for c in published] == ["opened", "tick", "tick", "tick"]
    times = [c.event.ts_event for c in published[1:]]
    assert all(later - earlier >= timedelta(seconds=1) for earlier, later in pairwise(times))
    # the state after the last price is written too, unpublished
    last = changes[-1]
    assert not last.published and last.event.kind == "tick"
    assert (
        last.position.last_event_time == last.event.ts_event == published[-1].event.ts_event + timedelta(seconds=0.75)
    )


def test_a_close_is_published_even_right_after_a_published_tick():
    changes = _run(timedelta(seconds=1), ["60020", "50000"], timedelta(milliseconds=100))
    assert [(c.event.kind, c.published) for c in changes] == [
        ("opened", True),
        ("tick", True),
        ("closed", True),
    ]


def test_unpublished_marks_leave_no_time_series_points():
    changes = _run(timedelta(seconds=1), ["60020"] * 3, timedelta(milliseconds=250))
    assert [c.published for c in changes] == [True, True, False]
    assert lines_for(changes[1]) and not lines_for(changes[2])


def test_a_zero_interval_publishes_every_mark():
    changes = _run(timedelta(0), ["60020"] * 5, timedelta(milliseconds=250))
    assert all(c.published for c in changes)
