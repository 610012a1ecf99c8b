"""On the event clock the risk stage holds an analysis until the prices before it are in. It gives up
waiting (and decides without them) only once those prices stopped arriving — a quiet feed — never
while they are still being read: a slow machine reading a long batch of prices is progress."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from phoenix95.agents.ports import InputRecord
from phoenix95.agents.risk import RiskStage
from phoenix95.connectors.exchange.brackets import bundled_brackets
from phoenix95.domain.config import TradingConfig
from phoenix95.schemas import topics
from phoenix95.schemas.codec import Codec
from phoenix95.schemas.convert import analyze
from phoenix95.schemas.messages import RiskVerdict
from tests import factories
from tests.factories import T0
from tests.unit.test_risk_lag_guard import EmptyPortfolio

HOLD_S = 2.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Feed:
    """The risk stage on the event clock, fed records one by one, with a hand-driven clock."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.stage = RiskStage(
            Codec(),
            TradingConfig(),
            bundled_brackets(),
            EmptyPortfolio(),
            clock="event",
            hold_timeout=HOLD_S,
            monotonic=self.clock,
        )
        asyncio.run(self.stage.start())
        self.offset = 0

    def _record(self, topic: str, value: bytes) -> InputRecord:
        self.offset += 1
        return InputRecord(topic, 0, self.offset, None, b"XRPUSDT", value)

    def price(self, minutes: int) -> list[RiskVerdict]:
        event = factories.price(value="1.19", at=T0 + timedelta(minutes=minutes))
        return self._verdicts(self.stage.process([self._record(topics.MARKET_PRICES, self.stage.codec.encode(event))]))

    def analysis(self, minutes: int) -> list[RiskVerdict]:
        signal = factories.signal(action="buy", confidence="0.92", price="1.19", at=T0 + timedelta(minutes=minutes))
        value = self.stage.codec.encode(analyze(signal))
        return self._verdicts(self.stage.process([self._record(topics.ANALYSIS, value)]))

    def tick(self, seconds: float) -> list[RiskVerdict]:
        self.clock.now += seconds
        return self._verdicts(self.stage.on_clock(T0))

    @staticmethod
    def _verdicts(coroutine) -> list[RiskVerdict]:
        outcomes = asyncio.run(coroutine)
        return [event for outcome in outcomes for event in outcome.produce if isinstance(event, RiskVerdict)]


def a_feed_with_an_open_order_on_xrp() -> Feed:
    feed = Feed()
    feed.price(0)
    (first,) = feed.analysis(1)  # nothing in the book yet: decided at once
    assert first.decision == "APPROVED", first.details
    assert feed.stage.desk.symbols_in_use() == {"XRPUSDT"}
    return feed


def test_an_analysis_ahead_of_the_prices_waits_while_the_prices_keep_arriving():
    feed = a_feed_with_an_open_order_on_xrp()
    assert feed.analysis(30) == []  # XRP prices only up to minute 0: held

    decided = []
    for minute in range(5, 30, 5):  # prices keep coming, one every 1.5 s, for 7.5 s in all
        decided += feed.tick(1.5)
        decided += feed.price(minute)
    assert decided == [] and len(feed.stage.held) == 1

    (verdict,) = feed.price(30)  # the price it waited for: decided on it
    assert verdict.ts_event == T0 + timedelta(minutes=30) and feed.stage.held == {}


def test_an_analysis_is_decided_without_its_prices_once_the_feed_went_quiet():
    feed = a_feed_with_an_open_order_on_xrp()
    assert feed.analysis(30) == []
    feed.tick(1.5)
    assert feed.price(5) == []

    assert feed.tick(1.5) == []  # 3 s since it was held, but prices came 1.5 s ago
    (verdict,) = feed.tick(0.6)  # 2.1 s without a price: the feed is quiet
    assert verdict.ts_event == T0 + timedelta(minutes=30) and feed.stage.held == {}


def test_an_analysis_waits_its_full_hold_time_even_when_the_feed_was_quiet_before_it():
    feed = a_feed_with_an_open_order_on_xrp()
    feed.tick(10.0)  # no price for 10 s before the analysis arrives
    assert feed.analysis(30) == []
    assert feed.tick(1.0) == []
    (verdict,) = feed.tick(1.1)
    assert verdict.ts_event == T0 + timedelta(minutes=30)
