"""The risk decision core, shared by the risk stage and the in-process replay.

It keeps what a decision needs beyond the signal — recent prices (volatility), the rate and
duplicate windows, and on the event clock the paper book — and decides with `domain.risk.evaluate`.
No I/O: the stage feeds it from Kafka and PostgreSQL, the replay from files.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from phoenix95.domain import ids
from phoenix95.domain.activity import RecentActivity
from phoenix95.domain.book import BookEvent, PaperBook
from phoenix95.domain.brackets import BracketTable
from phoenix95.domain.config import TradingConfig
from phoenix95.domain.execution import MarketTick
from phoenix95.domain.funding import FundingSchedule
from phoenix95.domain.positions import Position
from phoenix95.domain.protections import ClosedFact, EventClockProtections, ProtectionConfig
from phoenix95.domain.risk import (
    Exposure,
    ExposureSummary,
    MarketView,
    PortfolioView,
    RecentSignal,
    SymbolLock,
    evaluate,
)
from phoenix95.domain.trading_state import TradingState
from phoenix95.domain.volatility import ReturnWindow
from phoenix95.schemas.convert import pending_order, risk_request, tick_of, verdict_message
from phoenix95.schemas.envelope import utc_now
from phoenix95.schemas.messages import Analysis, MarketPrice, RiskVerdict


class RiskDesk:
    def __init__(
        self,
        config: TradingConfig,
        brackets: BracketTable,
        *,
        clock: Literal["wall", "event"] = "wall",
        funding: FundingSchedule | None = None,
        max_lag_seconds: float | None = None,
        max_market_data_age_seconds: float | None = None,
        protections: ProtectionConfig | None = None,
    ):
        self.config = config
        #: Event clock: the compliance monitor's protections, applied here in event time.
        self.protection_config = protections if clock == "event" else None
        self.max_market_data_age_seconds = max_market_data_age_seconds
        #: Wall clock: the event time of each symbol's latest price (the feed's staleness).
        self.price_time: dict[str, datetime] = {}
        self.brackets = brackets
        self.clock = clock
        self.funding = funding or FundingSchedule(config.default_funding_rate)
        self.max_lag_seconds = max_lag_seconds
        self.window = max(timedelta(minutes=1), config.duplicate_window)
        #: Returns of each symbol's prices before the decision time (volatility for the VaR).
        self.returns: dict[str, ReturnWindow] = {}
        self.activity = RecentActivity()
        self.book = self.new_book()
        self.unapplied: dict[str, list[MarketTick]] = {}
        self.latest_tick: dict[str, datetime] = {}
        #: The compliance monitor's symbol locks, as the stage last read them.
        self.locks: Mapping[str, SymbolLock] = {}
        self.protections = self.new_protections()
        self._closes_learned = 0

    def new_protections(self) -> EventClockProtections | None:
        if self.protection_config is None:
            return None
        protections = EventClockProtections(self.protection_config, self.config.starting_equity)
        return protections if protections.enabled else None

    def new_book(self) -> PaperBook:
        return PaperBook(self.config, self.brackets, self.funding, position_id_of=ids.position_id)

    def reset(self) -> None:
        self.returns.clear()
        self.activity = RecentActivity()
        self.book = self.new_book()
        self.unapplied.clear()
        self.latest_tick.clear()
        self.price_time.clear()
        self.protections = self.new_protections()
        self._closes_learned = 0

    def restore_closes(self, closed: list[ClosedFact]) -> None:
        """The closes recorded before a restart (the protections' figures are rebuilt from them)."""
        if self.protections is not None:
            self.protections.learn(closed)

    def restore_windows(self, approvals: list[datetime], signals: list[RecentSignal]) -> None:
        self.activity = RecentActivity(approvals, signals)

    def apply_tick(self, tick: MarketTick) -> list[BookEvent]:
        """Replays (events already in time order): observe a price and apply it to the book at once."""
        self._observe_return(tick)
        if tick.funding_rate is not None:
            self.funding.add(tick.symbol, [(tick.time, tick.funding_rate)])
        self.latest_tick[tick.symbol] = tick.time
        return self.book.on_price(tick)

    def decide_on_book(self, analysis: Analysis, state: TradingState) -> RiskVerdict:
        """Event clock: advance the book to the signal's time, decide on it, submit what is approved."""
        self.advance_book(analysis.ts_event)
        locks = self.locks
        if self.protections is not None:
            state, locks = self._protected(analysis.ts_event, state)
        # the book keeps the sums the checks need; the exposures themselves only while REDUCING
        exposures = list(self.book.exposures()) if state is TradingState.REDUCING else []
        message = self.decide(
            analysis, self.book.equity, state, exposures, summary=self.book.exposure_summary(), locks=locks
        )
        if message.approved and (message.plan is not None or message.intent == "close"):
            self.book.submit(pending_order(message))
        return message

    def _protected(self, at: datetime, state: TradingState) -> tuple[TradingState, Mapping[str, SymbolLock]]:
        """The trading state and locks at `at` with the protections' own halts and locks (event time)."""
        protections = self.protections
        assert protections is not None
        closed = self.book.closed
        if len(closed) > self._closes_learned:
            protections.learn(closed_fact(p) for p in closed[self._closes_learned :])
            self._closes_learned = len(closed)
        protections.advance(at)
        if protections.halt_at(at) is not None:
            state = TradingState.HALTED
        tripped = protections.locks_at(at)
        if not tripped:
            return state, self.locks
        locks = dict(self.locks)
        for symbol, lock in tripped.items():
            held = locks.get(symbol)
            if held is None or held.until < lock.until:
                locks[symbol] = lock
        return state, locks

    def now(self, signal_time: datetime) -> datetime:
        """Decision time. Event clock: the signal's own time, so a replay decides exactly as if each
        signal had been processed the instant it was raised. Wall clock: now."""
        if self.clock == "event":
            return signal_time
        return utc_now()

    def _observe_return(self, tick: MarketTick) -> None:
        window = self.returns.get(tick.symbol)
        if window is None:
            window = self.returns[tick.symbol] = ReturnWindow()
        window.append(tick.time, tick.price)

    def observe_price(self, price: MarketPrice) -> None:
        """A price as the stage receives it. Wall clock: it counts at once. Event clock: it waits
        until a decision after its time applies it (to the book and the volatility alike), so a
        decision sees exactly the prices before its signal, however early later ones arrived."""
        if self.clock == "wall":
            self._observe_return(tick_of(price))
            seen = self.price_time.get(price.symbol)
            if seen is None or price.ts_event > seen:
                self.price_time[price.symbol] = price.ts_event
        else:
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
                    self._observe_return(tick)
                    self.book.on_price(tick)
                    keep += 1
                else:
                    break
            if keep:
                del ticks[:keep]

    def symbols_in_use(self) -> set[str]:
        """Symbols the book holds a position or a pending order on."""
        return {p.symbol for p in self.book.open.values()} | {o.symbol for o in self.book.pending}

    def ready(self, at: datetime, symbols: set[str] | None = None) -> bool:
        """Every symbol the book holds something on (or of `symbols`, a superset of them) has
        prices up to `at`."""
        if symbols is None:
            symbols = self.symbols_in_use()
        latest = self.latest_tick
        return all(symbol in latest and latest[symbol] >= at for symbol in symbols)

    def decide(
        self,
        analysis: Analysis,
        equity: Decimal,
        state: TradingState,
        exposures: list[Exposure],
        *,
        lag_seconds: float = 0.0,
        summary: ExposureSummary | None = None,
        locks: Mapping[str, SymbolLock] | None = None,
    ) -> RiskVerdict:
        now = self.now(analysis.ts_event)
        self._trim(now)
        request = risk_request(analysis)
        portfolio = PortfolioView(
            equity=equity,
            trading_state=state,
            exposures=tuple(exposures),
            summary=summary,
            activity=self.activity,
            pipeline_lag_seconds=lag_seconds if self.clock == "wall" else 0.0,
            locks=self.locks if locks is None else locks,
        )
        window = self.returns.get(analysis.symbol)
        stale_check = self.max_market_data_age_seconds if self.clock == "wall" else None
        seen = self.price_time.get(analysis.symbol)
        market = MarketView(
            last_price=window.last_price if window is not None else None,
            daily_volatility=window.daily_volatility() if window is not None else None,
            data_age_seconds=(now - seen).total_seconds() if stale_check is not None and seen is not None else None,
        )
        verdict = evaluate(
            request,
            portfolio=portfolio,
            market=market,
            config=self.config,
            brackets=self.brackets,
            now=now,
            max_pipeline_lag_seconds=self.max_lag_seconds,
            max_market_data_age_seconds=stale_check,
        )
        message = verdict_message(analysis, verdict, decided_at=now)
        self.activity.add_signal(
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
            self.activity.add_approval(now)
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
        self.activity.trim(horizon, horizon - self.window)


def closed_fact(position: Position) -> ClosedFact:
    return ClosedFact(
        position.closed_at or position.last_event_time,
        position.symbol,
        position.position_id,
        position.realized_pnl,
        position.close_reason or position.status,
    )
