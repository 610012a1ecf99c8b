"""Risk stage: p95.analysis (+ p95.market.prices for volatility and the event clock) -> verdict ->
p95.risk.verdicts (and the risk_verdicts row)."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal, Protocol

from phoenix95.agents.base import Stage, dead_letter
from phoenix95.agents.ports import InputRecord, Outcome, VerdictMade
from phoenix95.domain import ids
from phoenix95.domain.brackets import BracketTable
from phoenix95.domain.config import TradingConfig
from phoenix95.domain.risk import (
    Exposure,
    MarketView,
    PortfolioView,
    RecentSignal,
    RiskRequest,
    Verdict,
    evaluate,
)
from phoenix95.domain.trading_state import TradingState
from phoenix95.schemas.codec import Codec, DecodeError
from phoenix95.schemas.envelope import utc_now
from phoenix95.schemas.messages import Analysis, MarketPrice, RiskPlan, RiskVerdict
from phoenix95.streams import topics

logger = logging.getLogger(__name__)
PRICE_WINDOW = 300


@dataclass(frozen=True)
class Snapshot:
    equity: Decimal
    trading_state: TradingState
    exposures: tuple[Exposure, ...]


class PortfolioReader(Protocol):
    async def snapshot(self) -> Snapshot: ...

    async def verdicts(self, verdict_ids: Sequence[str]) -> dict[str, RiskVerdict]: ...

    async def recent(self, window: timedelta) -> tuple[list[datetime], list[RecentSignal]]: ...


class LagProbe(Protocol):
    def lag_seconds(self) -> float: ...


class RiskStage(Stage):
    name = "risk"
    inputs = (topics.ANALYSIS, topics.MARKET_PRICES)

    def __init__(
        self,
        codec: Codec,
        config: TradingConfig,
        brackets: BracketTable,
        portfolio: PortfolioReader,
        *,
        clock: Literal["wall", "event"] = "wall",
        lag: LagProbe | None = None,
        max_lag_seconds: float | None = None,
        prices_topic: str = topics.MARKET_PRICES,
    ):
        self.codec = codec
        self.config = config
        self.brackets = brackets
        self.portfolio = portfolio
        self.clock = clock
        self.lag = lag
        self.max_lag_seconds = max_lag_seconds
        self.prices_topic = prices_topic
        self.prices: dict[str, deque[tuple[datetime, Decimal]]] = {}
        self.market_time: datetime | None = None
        self.window = max(timedelta(minutes=1), config.duplicate_window)
        self.recent_approvals: deque[datetime] = deque()
        self.recent_signals: deque[RecentSignal] = deque()

    async def start(self) -> None:
        approvals, signals = await self.portfolio.recent(self.window)
        self.recent_approvals = deque(approvals)
        self.recent_signals = deque(signals)

    def reset(self) -> None:
        self.prices.clear()
        self.market_time = None
        self.recent_approvals.clear()
        self.recent_signals.clear()

    def now(self, signal_time: datetime) -> datetime:
        """Decision time. Event clock (replays, the demo): the signal's own time, so a replay decides
        exactly as if each signal had been processed the instant it was raised. Wall clock: now."""
        if self.clock == "event":
            return signal_time
        return utc_now()

    def observe_price(self, price: MarketPrice) -> None:
        history = self.prices.setdefault(price.symbol, deque(maxlen=PRICE_WINDOW))
        if not history or price.ts_event > history[-1][0]:
            history.append((price.ts_event, price.price))
        if self.market_time is None or price.ts_event > self.market_time:
            self.market_time = price.ts_event

    async def process(self, records: Sequence[InputRecord]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        analyses: list[tuple[InputRecord, Analysis]] = []
        work: list[tuple[InputRecord, MarketPrice | Analysis | None]] = []
        for record in records:
            if record.topic.endswith(self.prices_topic):
                try:
                    work.append((record, self.codec.decode(record.value, MarketPrice)))
                except DecodeError:
                    work.append((record, None))  # dead-lettered by the positions stage, which owns prices
                continue
            try:
                analysis = self.codec.decode(record.value, Analysis)
            except DecodeError as error:
                outcomes.append(
                    Outcome(record, dead_letter=dead_letter(self.name, record, error.reason, error.message))
                )
                continue
            analyses.append((record, analysis))
            work.append((record, analysis))
        if analyses:
            existing = await self.portfolio.verdicts([ids.verdict_id(a.event_id) for _, a in analyses])
            snapshot = await self.portfolio.snapshot()
        exposures: list[Exposure] = list(snapshot.exposures) if analyses else []
        for record, item in work:
            if item is None:
                outcomes.append(Outcome(record))
            elif isinstance(item, MarketPrice):
                self.observe_price(item)
                outcomes.append(Outcome(record))
            else:
                verdict_id = ids.verdict_id(item.event_id)
                stored = existing.get(verdict_id)
                if stored is not None:
                    outcomes.append(Outcome(record, produce=[stored]))  # re-delivery: the same verdict again
                    continue
                message = self.decide(item, snapshot, exposures)
                outcomes.append(Outcome(record, produce=[message], persist=[VerdictMade(message)]))
        return outcomes

    def decide(self, analysis: Analysis, snapshot: Snapshot, exposures: list[Exposure]) -> RiskVerdict:
        now = self.now(analysis.ts_event)
        self._trim(now)
        request = RiskRequest(
            signal_id=analysis.signal_id,
            symbol=analysis.symbol,
            side=analysis.side,
            price=analysis.price,
            confidence=analysis.confidence,
            phoenix95_score=analysis.phoenix95_score,
            final_confidence=analysis.final_confidence,
            strategy=analysis.strategy,
            timeframe=analysis.timeframe,
            signal_time=analysis.ts_event,
        )
        portfolio = PortfolioView(
            equity=snapshot.equity,
            trading_state=snapshot.trading_state,
            exposures=tuple(exposures),
            recent_approvals=tuple(self.recent_approvals),
            recent_signals=tuple(self.recent_signals),
            pipeline_lag_seconds=self.lag.lag_seconds() if self.lag is not None else 0.0,
        )
        history = [entry for entry in self.prices.get(analysis.symbol, ()) if entry[0] <= now]
        market = MarketView(last_price=history[-1][1] if history else None, recent_prices=tuple(history))
        verdict = evaluate(
            request,
            portfolio=portfolio,
            market=market,
            config=self.config,
            brackets=self.brackets,
            now=now,
            max_pipeline_lag_seconds=self.max_lag_seconds,
        )
        message = verdict_message(analysis, verdict, decided_at=now)
        self.recent_signals.append(
            RecentSignal(
                analysis.signal_id,
                analysis.symbol,
                analysis.side,
                analysis.strategy,
                analysis.timeframe,
                analysis.ts_event,
            )
        )
        if verdict.approved:
            self.recent_approvals.append(now)
            if verdict.intent == "open" and verdict.plan is not None:
                plan = verdict.plan
                exposures.append(
                    Exposure(
                        message.verdict_id,
                        analysis.symbol,
                        analysis.side,
                        plan.quantity,
                        plan.notional,
                        plan.initial_margin,
                        now,
                        pending=True,
                    )
                )
            elif verdict.intent == "close":
                exposures[:] = [e for e in exposures if e.reference_id != verdict.close_reference_id]
        return message

    def _trim(self, now: datetime) -> None:
        horizon = now - self.window
        while self.recent_approvals and self.recent_approvals[0] < horizon:
            self.recent_approvals.popleft()
        while self.recent_signals and self.recent_signals[0].time < horizon - self.window:
            self.recent_signals.popleft()


def verdict_message(
    analysis: Analysis, verdict: Verdict, *, decided_at: datetime, producer: str = "risk"
) -> RiskVerdict:
    plan = verdict.plan
    return RiskVerdict.trusted(
        event_id=ids.verdict_id(analysis.event_id),
        correlation_id=analysis.signal_id,
        causation_id=analysis.event_id,
        ts_event=decided_at,
        ts_ingest=utc_now(),
        schema_version=RiskVerdict.SCHEMA_VERSION,
        producer=producer,
        verdict_id=ids.verdict_id(analysis.event_id),
        signal_id=analysis.signal_id,
        analysis_id=analysis.event_id,
        symbol=analysis.symbol,
        side=analysis.side,
        decision=verdict.decision,
        intent=verdict.intent,
        close_position_id=verdict.close_reference_id,
        reasons=tuple(r.value for r in verdict.reasons),
        details=verdict.details,
        trading_state=verdict.trading_state.value,
        signal_time=analysis.ts_event,
        price=analysis.price,
        confidence=analysis.confidence,
        phoenix95_score=analysis.phoenix95_score,
        final_confidence=analysis.final_confidence,
        plan=RiskPlan.model_construct(
            entry_price=plan.entry_price,
            stop_loss_price=plan.stop_loss_price,
            take_profit_price=plan.take_profit_price,
            liquidation_price=plan.liquidation_price,
            quantity=plan.quantity,
            notional=plan.notional,
            initial_margin=plan.initial_margin,
            maintenance_margin=plan.maintenance_margin,
            leverage=plan.leverage,
            margin_mode=plan.margin_mode,
            bracket=plan.bracket,
            maint_margin_ratio=plan.maint_margin_ratio,
            bracket_max_leverage=plan.bracket_max_leverage,
            kelly=plan.kelly,
            kelly_fraction=plan.kelly_fraction,
            position_fraction=plan.position_fraction,
            win_probability=plan.win_probability,
            payoff_ratio=plan.payoff_ratio,
            equity=plan.equity,
            free_margin=plan.free_margin,
            var_1d_95=plan.var_1d_95,
        )
        if plan is not None
        else None,
    )
