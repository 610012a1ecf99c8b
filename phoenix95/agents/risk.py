"""Risk stage: p95.analysis (+ p95.market.prices for volatility and the event clock) -> verdict ->
p95.risk.verdicts (and the risk_verdicts row)."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal, Protocol

from phoenix95.agents.base import Stage, dead_letter, record_key
from phoenix95.agents.execution import tick_of
from phoenix95.agents.ports import InputRecord, Outcome, VerdictMade
from phoenix95.domain import ids
from phoenix95.domain.book import PaperBook, PendingOrder
from phoenix95.domain.brackets import BracketTable
from phoenix95.domain.config import TradingConfig
from phoenix95.domain.execution import MarketTick
from phoenix95.domain.funding import FundingSchedule
from phoenix95.domain.positions import Position
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

    async def book_state(self) -> tuple[list[Position], list[PendingOrder], Decimal]: ...

    async def trading_state(self) -> TradingState: ...


class LagProbe(Protocol):
    def lag_seconds(self) -> float: ...


@dataclass
class _Held:
    record: InputRecord
    analysis: Analysis
    since: float


class RiskStage(Stage):
    """Wall clock (live): the portfolio view is what PostgreSQL holds now. Event clock (replays, the
    demo): the portfolio view is a `PaperBook` advanced to the signal's own time with the prices this
    stage receives, so a decision depends on event time only, never on how far the downstream
    stages happen to be; an analysis waits (un-acked) until the prices before it have arrived."""

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
        funding: FundingSchedule | None = None,
        hold_timeout: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.codec = codec
        self.config = config
        self.brackets = brackets
        self.portfolio = portfolio
        self.clock = clock
        self.lag = lag
        self.max_lag_seconds = max_lag_seconds
        self.prices_topic = prices_topic
        self.funding = funding or FundingSchedule(config.default_funding_rate)
        self.hold_timeout = hold_timeout
        self.clock_interval = 0.5 if clock == "event" else None
        self._monotonic = monotonic
        self.prices: dict[str, deque[tuple[datetime, Decimal]]] = {}
        self.window = max(timedelta(minutes=1), config.duplicate_window)
        self.recent_approvals: deque[datetime] = deque()
        self.recent_signals: deque[RecentSignal] = deque()
        self.book = self._new_book()
        self.unapplied: dict[str, list[MarketTick]] = {}
        self.latest_tick: dict[str, datetime] = {}
        self.held: dict[tuple[str, int, int], _Held] = {}

    def _new_book(self) -> PaperBook:
        return PaperBook(self.config, self.brackets, self.funding, position_id_of=ids.position_id)

    async def start(self) -> None:
        approvals, signals = await self.portfolio.recent(self.window)
        self.recent_approvals = deque(approvals)
        self.recent_signals = deque(signals)
        if self.clock == "event":
            positions, pending, realized = await self.portfolio.book_state()
            self.book = self._new_book()
            self.book.open = {p.position_id: p for p in positions}
            self.book.pending = list(pending)
            self.book.realized = realized

    def reset(self) -> None:
        self.prices.clear()
        self.recent_approvals.clear()
        self.recent_signals.clear()
        self.book = self._new_book()
        self.unapplied.clear()
        self.latest_tick.clear()
        self.held.clear()

    async def recover(self) -> None:
        held = dict(self.held)
        self.reset()
        await self.start()
        self.held = held  # their records are still un-acked: keep waiting for them

    def now(self, signal_time: datetime) -> datetime:
        """Decision time. Event clock: the signal's own time, so a replay decides exactly as if each
        signal had been processed the instant it was raised. Wall clock: now."""
        if self.clock == "event":
            return signal_time
        return utc_now()

    def observe_price(self, price: MarketPrice) -> None:
        history = self.prices.setdefault(price.symbol, deque(maxlen=PRICE_WINDOW))
        if not history or price.ts_event > history[-1][0]:
            history.append((price.ts_event, price.price))
        if self.clock == "event":
            if price.funding_rate is not None:
                self.funding.add(price.symbol, [(price.ts_event, price.funding_rate)])
            latest = self.latest_tick.get(price.symbol)
            if latest is None or price.ts_event > latest:
                self.latest_tick[price.symbol] = price.ts_event
                self.unapplied.setdefault(price.symbol, []).append(tick_of(price))

    def advance_book(self, until: datetime) -> None:
        """Apply the received prices before `until` (a tick at `until` fills an order decided then)."""
        for ticks in self.unapplied.values():
            keep = 0
            for tick in ticks:
                if tick.time < until:
                    self.book.on_price(tick)
                    keep += 1
                else:
                    break
            if keep:
                del ticks[:keep]

    def ready(self, at: datetime) -> bool:
        """Every symbol the book holds something on has prices up to `at`."""
        symbols = {p.symbol for p in self.book.open.values()} | {o.symbol for o in self.book.pending}
        return all(self.latest_tick.get(symbol) is not None and self.latest_tick[symbol] >= at for symbol in symbols)

    async def process(self, records: Sequence[InputRecord]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        work: list[tuple[InputRecord, MarketPrice | Analysis | None]] = []
        for record in records:
            if record.topic.endswith(self.prices_topic):
                try:
                    work.append((record, self.codec.decode(record.value, MarketPrice)))
                except DecodeError:
                    work.append((record, None))  # dead-lettered by the positions stage, which owns prices
                continue
            try:
                work.append((record, self.codec.decode(record.value, Analysis)))
            except DecodeError as error:
                outcomes.append(
                    Outcome(record, dead_letter=dead_letter(self.name, record, error.reason, error.message))
                )
        analyses = [(r, item) for r, item in work if isinstance(item, Analysis)]
        existing = await self.portfolio.verdicts([ids.verdict_id(a.event_id) for _, a in analyses]) if analyses else {}
        if self.clock == "event":
            return outcomes + await self._process_event_time(work, existing)
        snapshot = await self.portfolio.snapshot() if analyses else None
        exposures: list[Exposure] = list(snapshot.exposures) if snapshot is not None else []
        for record, item in work:
            if item is None or isinstance(item, MarketPrice):
                if item is not None:
                    self.observe_price(item)
                outcomes.append(Outcome(record))
                continue
            stored = existing.get(ids.verdict_id(item.event_id))
            if stored is not None:
                outcomes.append(Outcome(record, produce=[stored]))  # re-delivery: the same verdict again
                continue
            assert snapshot is not None
            message = self.decide(item, snapshot.equity, snapshot.trading_state, exposures)
            outcomes.append(Outcome(record, produce=[message], persist=[VerdictMade(message)]))
        return outcomes

    async def _process_event_time(
        self, work: list[tuple[InputRecord, MarketPrice | Analysis | None]], existing: dict[str, RiskVerdict]
    ) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for record, item in work:
            if item is None or isinstance(item, MarketPrice):
                if item is not None:
                    self.observe_price(item)
                outcomes.append(Outcome(record))
                continue
            stored = existing.get(ids.verdict_id(item.event_id))
            if stored is not None:
                outcomes.append(Outcome(record, produce=[stored]))
                continue
            self.held[record_key(record)] = _Held(record, item, self._monotonic())
        outcomes.extend(await self._decide_ready(force=False))
        return outcomes

    async def on_clock(self, now: datetime) -> list[Outcome]:
        if self.clock != "event" or not self.held:
            return []
        return await self._decide_ready(force=True)

    async def _decide_ready(self, *, force: bool) -> list[Outcome]:
        """Decide held analyses in signal-time order while the prices before them are in (or, with
        `force`, once the oldest has waited `hold_timeout` seconds)."""
        outcomes: list[Outcome] = []
        if not self.held:
            return outcomes
        state = await self.portfolio.trading_state()
        for key, held in sorted(
            self.held.items(), key=lambda item: (item[1].analysis.ts_event, item[1].analysis.event_id)
        ):
            at = held.analysis.ts_event
            waited = self._monotonic() - held.since
            if not self.ready(at) and not (force and waited >= self.hold_timeout):
                break
            if not self.ready(at):
                logger.warning(
                    "risk: deciding %s without prices up to %s (waited %.1fs)", held.analysis.signal_id, at, waited
                )
            self.advance_book(at)
            message = self.decide(held.analysis, self.book.equity, state, list(self.book.exposures()))
            if (message.approved and message.plan is not None and message.intent == "open") or (
                message.approved and message.intent == "close"
            ):
                self.book.submit(pending_order(message))
            del self.held[key]
            outcomes.append(Outcome(held.record, produce=[message], persist=[VerdictMade(message)]))
        return outcomes

    def decide(
        self, analysis: Analysis, equity: Decimal, state: TradingState, exposures: list[Exposure]
    ) -> RiskVerdict:
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
            equity=equity,
            trading_state=state,
            exposures=tuple(exposures),
            recent_approvals=tuple(self.recent_approvals),
            recent_signals=tuple(self.recent_signals),
            pipeline_lag_seconds=self.lag.lag_seconds() if self.lag is not None and self.clock == "wall" else 0.0,
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


def pending_order(verdict: RiskVerdict) -> PendingOrder:
    """The order the execution stage will place for an approved verdict, as the paper book holds it."""
    plan = verdict.plan
    return PendingOrder(
        order_id=ids.order_id(verdict.verdict_id),
        verdict_id=verdict.verdict_id,
        signal_id=verdict.signal_id,
        symbol=verdict.symbol,
        side=verdict.side,
        intent=verdict.intent,
        quantity=plan.quantity if plan is not None else Decimal(0),
        decision_time=verdict.ts_event,
        leverage=plan.leverage if plan is not None else 0,
        margin_mode=plan.margin_mode if plan is not None else "ISOLATED",
        planned_margin=plan.initial_margin if plan is not None else Decimal(0),
        planned_notional=plan.notional if plan is not None else Decimal(0),
        close_position_id=verdict.close_position_id,
    )


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
