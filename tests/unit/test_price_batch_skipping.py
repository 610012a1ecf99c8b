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
TO_APPLY = price_batch.BatchPrices.to_apply


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


def _run(
    prices: list[Any], book: list[Position], *, skipping: bool, monkeypatch: pytest.MonkeyPatch, batch: int = 97
) -> dict[str, Any]:
    codec = Codec()
    stage = PositionStage(
        codec, TradingConfig(), bundled_brackets(), Book(book), clock="event", mark_interval=timedelta(seconds=1)
    )
    skipped = 0

    def counted(self: Any, positions: Any, index: int, tick: Any, last_mark: Any) -> list[tuple[str, Any]]:
        """Every position (no skipping), or what `to_apply` answers (counted)."""
        nonlocal skipped
        if not skipping:
            return [(p.position_id, tick) for p in positions]
        found = TO_APPLY(self, positions, index, tick, last_mark)
        skipped += len(positions) - sum(1 for _, applied in found if applied is tick)
        return found

    asked = 0

    def ask(self: Any, *args: Any) -> bool:
        nonlocal asked
        asked += 1
        return SKIPPABLE(self, *args)

    monkeypatch.setattr(price_batch.BatchPrices, "to_apply", counted)
    monkeypatch.setattr(price_batch.BatchPrices, "skippable", ask)
    asyncio.run(stage.start())
    records = [
        InputRecord(topics.MARKET_PRICES, 0, offset, None, b"BTCUSDT", codec.encode(price), ())
        for offset, price in enumerate(prices)
    ]
    outcomes: list[Outcome] = []
    for index in range(0, len(records), batch):
        outcomes.extend(asyncio.run(stage.process(records[index : index + batch])))

    def plain(event: Any) -> Any:
        return event.model_copy(update={"ts_ingest": None})

    return {
        "skipped": skipped,
        "asked": asked,
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
    # and most of those without asking each position: the symbol's interior prices pass them all by
    assert skipping["asked"] < skipping["skipped"] / 2, skipping


@pytest.mark.parametrize("seed", range(4))
def test_skipping_in_large_batches_of_fast_prices_changes_nothing(seed, monkeypatch):
    """Batches of 500 prices 2-5 ms apart: positions are passed by, fall due and are passed by again
    within a batch, their kept highs and lows applied before each tick they publish (even seeds: a
    path with jumps to stops and targets)."""
    rng = random.Random(100 + seed)
    start = datetime(2024, 3, 1, 1, tzinfo=UTC)
    prices = _prices(rng, start, 2000, timedelta(milliseconds=rng.choice((2, 5))), jumps=seed % 2 == 0)
    book = _book(start)
    every = _run(prices, book, skipping=False, monkeypatch=monkeypatch, batch=500)
    skipping = _run(prices, book, skipping=True, monkeypatch=monkeypatch, batch=500)
    for key in ("produced", "written", "open", "realized", "last_mark"):
        assert skipping[key] == every[key], key
    if seed % 2:  # no jumps: the positions stay quiet, and most prices pass them by without asking each
        assert skipping["skipped"] > len(prices) * len(book) / 2
        assert skipping["asked"] < skipping["skipped"] / 4
