"""Lag-aware safety: the risk stage rejects new signals as SIGNAL_STALE while the signal path (analysis
and risk stages) lags more than the limit, and decides normally again once the lag falls back."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from phoenix95.agents.ports import InputRecord, Snapshot, VerdictMade
from phoenix95.agents.risk import RiskStage
from phoenix95.connectors.exchange.brackets import bundled_brackets
from phoenix95.domain.book import PendingOrder
from phoenix95.domain.config import TradingConfig
from phoenix95.domain.positions import Position
from phoenix95.domain.risk import RecentSignal
from phoenix95.domain.trading_state import TradingState
from phoenix95.schemas import topics
from phoenix95.schemas.codec import Codec
from phoenix95.schemas.convert import analyze
from phoenix95.schemas.messages import RiskVerdict
from tests import factories

LIMIT_S = 30.0


class FakeLagProbe:
    def __init__(self, seconds: float):
        self.seconds = seconds

    def lag_seconds(self) -> float:
        return self.seconds


class EmptyPortfolio:
    """A fresh account: full equity, nothing open, nothing decided before."""

    async def snapshot(self) -> Snapshot:
        return Snapshot(equity=Decimal("10000"), trading_state=TradingState.ACTIVE, exposures=())

    async def verdicts(self, verdict_ids: Sequence[str]) -> dict[str, RiskVerdict]:
        return {}

    async def recent(self, window: timedelta) -> tuple[list[datetime], list[RecentSignal]]:
        return [], []

    async def book_state(self) -> tuple[list[Position], list[PendingOrder], Decimal]:
        return [], [], Decimal(0)

    async def trading_state(self) -> TradingState:
        return TradingState.ACTIVE


def risk_stage(probe: FakeLagProbe, *, clock: str = "wall") -> RiskStage:
    stage = RiskStage(
        Codec(),
        TradingConfig(),
        bundled_brackets(),
        EmptyPortfolio(),
        clock=clock,  # type: ignore[arg-type]
        lag=probe,
        max_lag_seconds=LIMIT_S,
    )
    asyncio.run(stage.start())
    return stage


def decide(stage: RiskStage, offset: int = 0) -> RiskVerdict:
    """One fresh, confident buy signal's analysis through the stage; the verdict it produced."""
    analysis = analyze(factories.signal(action="buy", confidence="0.92", price="1.1812", at=datetime.now(UTC)))
    record = InputRecord(
        topic=topics.ANALYSIS,
        partition=0,
        offset=offset,
        timestamp=datetime.now(UTC),
        key=b"XRPUSDT",
        value=stage.codec.encode(analysis),
    )
    (outcome,) = asyncio.run(stage.process([record]))
    assert outcome.dead_letter is None
    (verdict,) = outcome.produce
    assert isinstance(verdict, RiskVerdict)
    assert outcome.persist == [VerdictMade(verdict)]
    return verdict


def stale_details(verdict: RiskVerdict) -> list[str]:
    return [detail for detail in verdict.details if "pipeline lag" in detail]


def test_risk_rejects_new_signal_as_stale_while_pipeline_lag_exceeds_the_limit():
    verdict = decide(risk_stage(FakeLagProbe(45.2)))

    assert verdict.decision == "REJECTED"
    assert "SIGNAL_STALE" in verdict.reasons
    assert stale_details(verdict) == ["SIGNAL_STALE: pipeline lag 45.2s > 30.0s"]


@pytest.mark.parametrize("lag_seconds", [0.0, 12.5, LIMIT_S])
def test_risk_decides_normally_while_pipeline_lag_is_within_the_limit(lag_seconds):
    verdict = decide(risk_stage(FakeLagProbe(lag_seconds)))

    assert "SIGNAL_STALE" not in verdict.reasons
    assert stale_details(verdict) == []
    assert verdict.decision == "APPROVED", verdict.details  # the same signal a lagging pipeline rejects


def test_risk_rejects_until_the_pipeline_recovers_then_approves_again():
    probe = FakeLagProbe(31.0)
    stage = risk_stage(probe)

    during = [decide(stage, offset) for offset in range(2)]
    probe.seconds = 0.4  # the analysis and risk groups caught up
    after = decide(stage, 2)

    assert [(v.decision, v.reasons) for v in during] == [("REJECTED", ("SIGNAL_STALE",))] * 2
    assert after.decision == "APPROVED" and after.reasons == ()


def test_event_clock_replay_is_not_judged_on_pipeline_lag():
    # Replays and the demo run on the event clock: a backlog is their normal state, not staleness.
    verdict = decide(risk_stage(FakeLagProbe(3600.0), clock="event"))

    assert stale_details(verdict) == []
    assert "SIGNAL_STALE" not in verdict.reasons
