"""The compliance monitor's book figures: stop-loss streaks, drawdown and the day's PnL in the
configured trading day, exposure per symbol, published to its boards (Redis, gauges) at most once a
second and at once when a protection trips."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry

from phoenix95.agents.compliance import ComplianceStage
from phoenix95.agents.ports import InputRecord
from phoenix95.cli.trading import figure_lines
from phoenix95.domain.protections import BookMonitor, ProtectionConfig
from phoenix95.domain.risk import ALL_SYMBOLS
from phoenix95.schemas import topics
from phoenix95.schemas.codec import Codec
from phoenix95.streams.metrics import ComplianceGauges
from tests import factories

T0 = datetime(2021, 11, 15, 14, 0, tzinfo=UTC)


def test_stop_loss_streaks_count_in_a_row_per_symbol_and_in_total_and_a_win_ends_them():
    monitor = BookMonitor(ProtectionConfig(stoploss_guard_count=0), Decimal(10000))
    monitor.close("XRPUSDT", Decimal(-10), "stop_loss", T0)
    monitor.close("BTCUSDT", Decimal(-10), "liquidation", T0)
    monitor.close("XRPUSDT", Decimal(-10), "stop_loss", T0)
    assert monitor.streaks == {"XRPUSDT": 2, "BTCUSDT": 1, ALL_SYMBOLS: 3}
    monitor.close("BTCUSDT", Decimal(30), "take_profit", T0)
    assert monitor.streaks == {"XRPUSDT": 2, "BTCUSDT": 0, ALL_SYMBOLS: 0}


def test_the_trading_day_follows_the_configured_time_zone():
    # 14:30 and 15:30 UTC are one UTC day but two days in Seoul (UTC+9): the loss limit resets between
    seoul = ProtectionConfig(daily_loss_limit_pct=Decimal(5), max_drawdown_pct=Decimal(0), day_timezone="Asia/Seoul")
    monitor = BookMonitor(seoul, Decimal(10000))
    assert [t.reason for t in monitor.close("XRPUSDT", Decimal(-600), "stop_loss", T0 + timedelta(minutes=30))] == [
        "DAILY_LOSS_LIMIT"
    ]
    assert monitor.day == "2021-11-15"
    monitor.close("XRPUSDT", Decimal(-100), "stop_loss", T0 + timedelta(minutes=90))
    assert monitor.day == "2021-11-16" and monitor.day_pnl == Decimal(-100)
    assert seoul.next_day_start(T0) == datetime(2021, 11, 15, 15, 0, tzinfo=UTC)
    utc = BookMonitor(ProtectionConfig(daily_loss_limit_pct=Decimal(0)), Decimal(10000))
    utc.close("XRPUSDT", Decimal(-600), "stop_loss", T0 + timedelta(minutes=30))
    utc.close("XRPUSDT", Decimal(-100), "stop_loss", T0 + timedelta(minutes=90))
    assert utc.day == "2021-11-15" and utc.day_pnl == Decimal(-700)


def test_an_unknown_time_zone_is_refused_naming_the_setting():
    assert ProtectionConfig(day_timezone="Mars/Olympus").problems() == [
        "compliance.day_timezone must be an IANA time zone such as UTC or Asia/Seoul, not 'Mars/Olympus'"
    ]


class Board:
    def __init__(self) -> None:
        self.shown: list[dict[str, Any]] = []

    async def publish(self, figures: dict[str, Any]) -> None:
        self.shown.append(figures)


class NoTrips:
    async def apply_trip(self, trip_id, trip) -> bool:
        return True

    async def closed_positions(self):
        return []


def record(event: Any, offset: int) -> InputRecord:
    return InputRecord(
        topic=topics.POSITION_TICKS, partition=0, offset=offset, timestamp=T0, key=b"k", value=Codec().encode(event)
    )


def test_figures_show_exposure_per_symbol_and_are_published_at_most_once_a_second_but_at_once_on_a_trip():
    board = Board()
    config = ProtectionConfig(max_drawdown_pct=Decimal("0.5"), daily_loss_limit_pct=Decimal(0))
    stage = ComplianceStage(Codec(), config, Decimal(10000), NoTrips(), boards=[board], publish_every_s=3600)
    opened = factories.position_event("opened", position_id="a" * 8 + "-1d2b-5c3d-9e8f-0a1b2c3d4e5f", at=T0)
    asyncio.run(stage.process([record(opened, 0)]))
    assert len(board.shown) == 1
    assert board.shown[0]["exposure"] == {"XRPUSDT": "51.00"} and board.shown[0]["total_exposure"] == "51.00"
    tick = factories.position_event("tick", position_id="a" * 8 + "-1d2b-5c3d-9e8f-0a1b2c3d4e5f", at=T0)
    asyncio.run(stage.process([record(tick, 1)]))
    assert len(board.shown) == 1  # within the second (here: the hour): not again
    closed = factories.position_event(
        "closed", position_id="a" * 8 + "-1d2b-5c3d-9e8f-0a1b2c3d4e5f", close_reason="stop_loss", at=T0
    ).model_copy(update={"realized_pnl": Decimal(-60), "closed_at": T0})
    [outcome] = asyncio.run(stage.process([record(closed, 2)]))
    assert [event.reason for event in outcome.produce] == ["MAX_DRAWDOWN"]
    figures = board.shown[-1]  # a trip publishes at once
    assert len(board.shown) == 2
    assert (figures["exposure"], figures["total_exposure"]) == ({}, "0")
    assert figures["stop_loss_streaks"] == {ALL_SYMBOLS: 1, "XRPUSDT": 1}
    assert (figures["equity"], figures["drawdown_pct"], figures["halted_for"]) == ("9940", "0.6000", ["MAX_DRAWDOWN"])
    assert figures["as_of"] == T0.isoformat() and figures["timezone"] == "UTC"

    registry = CollectorRegistry()
    asyncio.run(ComplianceGauges(registry).publish(figures))
    assert registry.get_sample_value("p95_compliance_drawdown_percent") == 0.6
    assert registry.get_sample_value("p95_compliance_stop_loss_streak", {"symbol": "XRPUSDT"}) == 1
    assert registry.get_sample_value("p95_compliance_equity_usdt") == 9940

    lines = figure_lines(figures, None)
    assert "drawdown 0.6000% from peak 10000" in lines[0] and "stop-losses in a row: * 1, XRPUSDT 1" in lines[1]
    assert figure_lines(None, "Redis: ConnectionError") == ["book figures: unavailable (Redis: ConnectionError)"]
