"""Prices of a batch that pass a position by without a trace are skipped (domain/price_batch.py), and
everything the positions stage produces and writes comes out exactly as with every price applied: the
same ticks published, the same stop, target and liquidation closes at the same prices, the same funding,
the same latest state and best/worst ROE."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from phoenix95.agents.ports import InputRecord, Outcome, PositionChanged
from phoenix95.agents.positions import PositionStage
from phoenix95.connectors.exchange.brackets import bundled_brackets
from phoenix95.domain import price_batch
from phoenix95.domain.config import TradingConfig
from phoenix95.domain.positions import Position
from phoenix95.schemas import topics
from phoenix95.schemas.codec import Codec
from tests import factories

SKIPPABLE = price_batch.BatchPrices.skippable


class Book:
    def __init__(self, positions: list[Position]):
        self.open = positions

    async def open_positions(self) -> list[Position]:
        return list(self.open)

    async def positions(self, position_ids: Sequence[str]) -> dict[str, Position]:
        return {}

    async def realized_pnl(self) -> Decimal:
        return Decimal(0)


def _book(start: datetime) -> list[Position]:
    return [
        factories.position(side=side, price=price, at=start)  # type: ignore[arg-type]
        for side, price in [("long", "60000"), ("short", "60000"), ("long", "60600"), ("short", "59400"),
                            ("long", "59000"), ("short", "61000")]
    ]  # fmt: skip


def _prices(rng: random.Random, start: datetime, count: int, step: timedelta, *, jumps: bool = True) -> list[Any]:
    level = Decimal("60000")
    prices = []
    for index in range(count):
        opened = level
        # small moves, and now and then a jump or a long wick that reaches some stop or target
        level += Decimal(
            rng.choice((-30, -10, -5, 0, 5, 10, 30)) if not jumps or rng.random() > 0.01 else rng.choice((-900, 900))
        )
        candle = rng.random() < 0.3
        high = (
            max(opened, level) + Decimal(rng.choice((0, 20, 80) if not jumps or rng.random() > 0.02 else (700,)))
            if candle
            else None
        )
        low = (
            min(opened, level) - Decimal(rng.choice((0, 20, 80) if not jumps or rng.random() > 0.02 else (700,)))
            if candle
            else None
        )
        mark = level + Decimal(rng.choice((-10, 0, 10))) if rng.random() < 0.5 else None
        prices.append(
            factories.price(
                symbol="BTCUSDT", value=level, at=start + step * (index + 1), high=high, low=low, mark_price=mark,
                open_=opened if candle else None,
            )
        )  # fmt: skip
    return prices


def _run(prices: list[Any], book: list[Position], *, skipping: bool, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    codec = Codec()
    stage = PositionStage(
        codec, TradingConfig(), bundled_brackets(), Book(book), clock="event", mark_interval=timedelta(seconds=1)
    )
    skipped = 0

    def counted(self: Any, *args: Any) -> bool:
        nonlocal skipped
        found = SKIPPABLE(self, *args) if skipping else False
        skipped += found
        return found

    monkeypatch.setattr(price_batch.BatchPrices, "skippable", counted)
    asyncio.run(stage.start())
    records = [
        InputRecord(topics.MARKET_PRICES, 0, offset, None, b"BTCUSDT", codec.encode(price), ())
        for offset, price in enumerate(prices)
    ]
    outcomes: list[Outcome] = []
    for index in range(0, len(records), 97):  # batches of 97
        outcomes.extend(asyncio.run(stage.process(records[index : index + 97])))

    def plain(event: Any) -> Any:
        return event.model_copy(update={"ts_ingest": None})

    return {
        "skipped": skipped,
        "produced": [[plain(e) for e in o.produce] for o in outcomes],
        "written": [
            [(plain(f.event), f.position, f.published) for f in o.persist if isinstance(f, PositionChanged)]
            for o in outcomes
        ],
        "open": stage.open,
        "realized": stage.realized,
        "last_mark": stage.last_mark,
    }


@pytest.mark.parametrize("seed", range(8))
def test_skipping_quiet_prices_changes_nothing_the_stage_produces_or_writes(seed, monkeypatch):
    rng = random.Random(seed)
    # seed 0 and 1 cross a funding time (08:00 UTC) inside a batch
    start = datetime(2024, 3, 1, 7, 59, 50, tzinfo=UTC) if seed < 2 else datetime(2024, 3, 1, 1, tzinfo=UTC)
    prices = _prices(rng, start, 600, timedelta(milliseconds=rng.choice((20, 50, 100))))
    book = _book(start)
    every = _run(prices, book, skipping=False, monkeypatch=monkeypatch)
    skipping = _run(prices, book, skipping=True, monkeypatch=monkeypatch)
    for key in ("produced", "written", "open", "realized", "last_mark"):
        assert skipping[key] == every[key], key
    closes = [e.kind for batch in every["produced"] for e in batch if e.kind != "tick"]
    assert closes, "the path closes some positions"


def test_on_a_quiet_path_most_prices_pass_the_positions_by(monkeypatch):
    start = datetime(2024, 3, 1, 1, tzinfo=UTC)
    prices = _prices(random.Random(95), start, 600, timedelta(milliseconds=20), jumps=False)
    book = _book(start)
    every = _run(prices, book, skipping=False, monkeypatch=monkeypatch)
    skipping = _run(prices, book, skipping=True, monkeypatch=monkeypatch)
    for key in ("produced", "written", "open", "realized", "last_mark"):
        assert skipping[key] == every[key], key
    assert skipping["skipped"] > len(prices) * len(book) / 2
