"""The execution stage reads only the symbol and time of each price and decodes a price when it fills
at it (domain/lazy_prices.py). Every order comes out as with every price decoded on arrival: the
stage is run beside the way it read prices before (`EagerExecution`, that code kept here as the
reference) over random batches of prices (late, repeated, invalid and undecodable ones among them),
verdicts before, between and after them, and quiet-feed fills, and each batch's outcomes and the
requests the exchange got are compared."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from phoenix95.agents.base import record_key
from phoenix95.agents.execution import ExecutionStage, _Pending
from phoenix95.agents.ports import InputRecord, OrderRequest, Outcome
from phoenix95.connectors.exchange.base import ExchangeOrder
from phoenix95.connectors.exchange.brackets import bundled_brackets
from phoenix95.domain.config import TradingConfig
from phoenix95.domain.execution import MarketTick, PriceHistory, next_price_at_or_after
from phoenix95.domain.risk import MarketView, PortfolioView, RiskRequest, evaluate
from phoenix95.schemas import topics
from phoenix95.schemas.codec import Codec, DecodeError
from phoenix95.schemas.convert import analyze, dead_letter, tick_of, verdict_message
from phoenix95.schemas.messages import MarketPrice, RiskVerdict
from tests import factories
from tests.exchange_helpers import MemoryState

T0 = factories.T0
SYMBOLS = {"BTCUSDT": Decimal("60000"), "ETHUSDT": Decimal("3000")}


class EagerExecution(ExecutionStage):
    """The stage as it read prices before: every price decoded on arrival into a `PriceHistory`."""

    def observe(self, tick: MarketTick) -> None:
        history = self.prices.get(tick.symbol)
        if history is None:
            history = self.prices[tick.symbol] = PriceHistory(self.price_history)  # type: ignore[assignment]
        history.append(tick)  # type: ignore[call-arg]

    def fill_tick(self, verdict: RiskVerdict) -> MarketTick | None:
        history: Any = self.prices.get(verdict.symbol)
        if not history:
            return None
        return next_price_at_or_after(history, verdict.ts_event)

    async def process(self, records: Sequence[InputRecord]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        ready: list[tuple[InputRecord, RiskVerdict, MarketTick | None]] = []
        released: list[tuple[str, int, int]] = []
        verdicts: list[tuple[InputRecord, RiskVerdict]] = []
        for record in records:
            if record.topic.endswith(self.prices_topic):
                try:
                    tick = tick_of(self.codec.decode(record.value, MarketPrice))
                except DecodeError:
                    outcomes.append(Outcome(record))
                    continue
                self.observe(tick)
                outcomes.append(Outcome(record))
                for key, pending in self.pending.items():
                    if (
                        key not in released
                        and pending.verdict.symbol == tick.symbol
                        and tick.time >= pending.verdict.ts_event
                    ):
                        released.append(key)
                        ready.append((pending.record, pending.verdict, self.fill_tick(pending.verdict)))
                continue
            try:
                verdict = self.codec.decode(record.value, RiskVerdict)
            except DecodeError as error:
                outcomes.append(
                    Outcome(record, dead_letter=dead_letter(self.name, record, error.reason, error.message))
                )
                continue
            if not verdict.approved:
                outcomes.append(Outcome(record))
                continue
            verdicts.append((record, verdict))
        stored = await self.state.orders([v.verdict_id for _, v in verdicts]) if verdicts else {}
        waiting: list[tuple[tuple[str, int, int], _Pending]] = []
        for record, verdict in verdicts:
            order = stored.get(verdict.verdict_id)
            if order is not None:
                outcomes.append(Outcome(record, produce=[order]))
                continue
            next_tick = self.fill_tick(verdict)
            if next_tick is None:
                waiting.append((record_key(record), _Pending(record, verdict, self._now())))
            else:
                ready.append((record, verdict, next_tick))
        if ready:
            outcomes.extend(await self.execute(ready))
        for key in released:
            self.pending.pop(key, None)
        self.pending.update(waiting)
        return outcomes

    async def on_clock(self, now: datetime) -> list[Outcome]:
        due = [key for key, p in self.pending.items() if self._now() - p.since >= self.quiet_fill_after]
        if not due:
            return []
        ready = []
        for key in due:
            pending = self.pending[key]
            history: Any = self.prices.get(pending.verdict.symbol)
            ready.append((pending.record, pending.verdict, history[-1] if history else None))
        outcomes = await self.execute(ready)
        for key in due:
            self.pending.pop(key, None)
        return outcomes


class FillingExchange:
    """Fills every order at its reference price and time, and keeps the requests it got."""

    name = "paper"

    def __init__(self) -> None:
        self.requests: list[OrderRequest] = []

    async def query(self, client_order_ids: Sequence[str]) -> dict[str, ExchangeOrder]:
        return {}

    async def submit(self, requests: Sequence[OrderRequest]) -> dict[str, ExchangeOrder]:
        self.requests.extend(requests)
        return {
            r.client_order_id: ExchangeOrder(
                r.client_order_id, f"x-{r.client_order_id}", r.symbol, r.side, r.quantity, "FILLED",
                r.reference_price, Decimal("0.1"), r.time, Decimal(0), r.reference_price,
            )
            for r in requests
        }  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _verdict(symbol: str, at: datetime) -> RiskVerdict:
    signal = factories.signal(symbol=symbol, price=SYMBOLS[symbol], confidence="0.9", rsi="40", macd="12", at=at)
    analysis = analyze(signal)
    request = RiskRequest(
        analysis.signal_id, analysis.symbol, analysis.side, analysis.price, analysis.confidence,
        analysis.phoenix95_score, analysis.final_confidence, analysis.strategy, analysis.timeframe,
        analysis.ts_event,
    )  # fmt: skip
    decision = evaluate(
        request,
        portfolio=PortfolioView(equity=Decimal(10000)),
        market=MarketView(),
        config=TradingConfig(),
        brackets=bundled_brackets(),
        now=at,
    )
    verdict = verdict_message(analysis, decision, decided_at=at)
    assert verdict.approved, verdict
    return verdict


def _stream(seed: int, codec: Codec, *, invalid: bool) -> list[list[InputRecord] | None]:
    """Batches of records (None: a clock tick after the quiet-feed time); `invalid`: with prices that
    do not validate or do not decode among them."""
    rng = random.Random(seed)
    items: list[InputRecord] = []
    offsets = {"prices": 0, "verdicts": 0}
    second = 0.0

    def record(kind: str, value: bytes, key: bytes) -> InputRecord:
        offsets[kind] += 1
        topic = f"t.{topics.MARKET_PRICES}" if kind == "prices" else f"t.{topics.RISK_VERDICTS}"
        return InputRecord(topic, 0, offsets[kind], None, key, value)

    for _ in range(rng.randint(30, 100)):
        roll = rng.random()
        symbol = rng.choice(list(SYMBOLS))
        if roll < 0.7:
            second += rng.choice((0, 0.5, 1, 1, 2, -1))  # now and then a repeated or a late price
            at = T0 + timedelta(seconds=second)
            level = SYMBOLS[symbol] + rng.randint(-50, 50)
            if invalid and rng.random() < 0.08:  # its head reads, the price does not validate
                price = factories.price(symbol=symbol, value=level, at=at)
                fields = price.to_avro()
                fields["price"] = "-1"
                value = codec.encode_record(MarketPrice.SCHEMA_NAME, fields)
            elif invalid and rng.random() < 0.04:
                value = b"\xc3\x01 not a price"
            else:
                value = codec.encode(factories.price(symbol=symbol, value=level, at=at, mark_price=level + 1))
            items.append(record("prices", value, symbol.encode()))
        else:
            at = T0 + timedelta(seconds=second + rng.choice((-30, -3, -0.5, 0, 0.25, 1, 4, 60)))
            items.append(record("verdicts", codec.encode(_verdict(symbol, at)), symbol.encode()))
    batches: list[list[InputRecord] | None] = []
    while items:
        size = rng.choice((1, 2, 5, 20, 200))
        batches.append(items[:size])
        del items[:size]
        if rng.random() < 0.15:
            batches.append(None)
    return batches


def _summary(outcomes: list[Outcome]) -> list[tuple[Any, ...]]:
    return [
        (
            record_key(o.record),
            [(e.event_id, e.model_dump(mode="json", exclude={"ts_ingest"})) for e in o.produce],
            o.dead_letter.reason if o.dead_letter is not None else None,
        )
        for o in outcomes
    ]


# A short history (8) trims: the lazy one counts the entries it has not decoded yet, so it trims as the
# eager one does only when every price is valid (domain/lazy_prices.py).
@pytest.mark.parametrize(("price_history", "invalid"), [(5000, True), (8, False)])
@pytest.mark.parametrize("seed", range(6))
def test_every_order_is_filled_as_with_every_price_decoded_on_arrival(seed, price_history, invalid):
    async def run() -> None:
        codec = Codec()
        stream = _stream(seed, codec, invalid=invalid)
        runs = []
        for kind in (EagerExecution, ExecutionStage):
            exchange, clock = FillingExchange(), Clock()
            stage = kind(
                codec, exchange, MemoryState(), quiet_fill_after=2.0, price_history=price_history, monotonic=clock
            )
            stage.prices_topic = topics.MARKET_PRICES
            seen = []
            for batch in stream:
                clock.now += 1.0
                if batch is None:
                    clock.now += 5.0
                    seen.append(_summary(await stage.on_clock(T0)))
                else:
                    seen.append(_summary(await stage.process(batch)))
            seen.append(sorted(stage.pending))
            runs.append((seen, exchange.requests))
        (eager, eager_requests), (lazy, lazy_requests) = runs
        assert lazy == eager
        assert lazy_requests == eager_requests
        assert eager_requests  # orders were filled

    asyncio.run(run())


def test_a_price_that_does_not_validate_releases_no_held_verdict():
    """A held verdict is released by the next valid price of its symbol, not by one whose head reads but
    which does not validate (the positions stage dead-letters that one)."""

    async def run() -> None:
        codec = Codec()
        verdict = _verdict("BTCUSDT", T0 + timedelta(seconds=10))
        bad = factories.price(symbol="BTCUSDT", value="60010", at=T0 + timedelta(seconds=11)).to_avro()
        bad["price"] = "-1"
        good = factories.price(symbol="BTCUSDT", value="60020", at=T0 + timedelta(seconds=12))
        prices, verdicts = f"t.{topics.MARKET_PRICES}", f"t.{topics.RISK_VERDICTS}"
        batches = [
            [InputRecord(prices, 0, 1, None, b"BTCUSDT", codec.encode(factories.price(symbol="BTCUSDT", at=T0)))],
            [InputRecord(verdicts, 0, 1, None, b"BTCUSDT", codec.encode(verdict))],
            [InputRecord(prices, 0, 2, None, b"BTCUSDT", codec.encode_record(MarketPrice.SCHEMA_NAME, bad))],
            [InputRecord(prices, 0, 3, None, b"BTCUSDT", codec.encode(good))],
        ]
        for kind in (EagerExecution, ExecutionStage):
            exchange = FillingExchange()
            stage = kind(codec, exchange, MemoryState(), quiet_fill_after=60.0)
            stage.prices_topic = topics.MARKET_PRICES
            produced = [[o.produce for o in await stage.process(batch)] for batch in batches]
            assert [len(p) for p in produced] == [1, 0, 1, 2]  # held, still held, filled
            assert [(r.reference_price, r.price_event_id) for r in exchange.requests] == [(good.price, good.event_id)]

    asyncio.run(run())
