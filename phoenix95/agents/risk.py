"""Risk stage: p95.analysis (+ p95.market.prices for volatility and the event clock) -> verdict ->
p95.risk.verdicts (and the risk_verdicts row)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from phoenix95.agents.base import Stage, record_key
from phoenix95.agents.ports import (
    InputRecord,
    LagProbe,
    Outcome,
    PortfolioReader,
    Snapshot,
    SymbolRulesSource,
    VerdictMade,
)
from phoenix95.agents.risk_desk import RiskDesk
from phoenix95.aio import all_of
from phoenix95.domain import ids
from phoenix95.domain.brackets import BracketTable
from phoenix95.domain.config import TradingConfig
from phoenix95.domain.funding import FundingSchedule
from phoenix95.domain.protections import ProtectionConfig
from phoenix95.domain.risk import Exposure, SymbolLock
from phoenix95.schemas import topics
from phoenix95.schemas.codec import Codec, DecodeError
from phoenix95.schemas.convert import dead_letter
from phoenix95.schemas.messages import Analysis, MarketPrice, RiskVerdict
from phoenix95.streams.stages import RISK

logger = logging.getLogger(__name__)
PRICE_WINDOW = 300


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

    name = RISK.name
    inputs = RISK.inputs

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
        locks: Callable[[], Awaitable[Mapping[str, SymbolLock]]] | None = None,
        max_market_data_age_seconds: float | None = None,
        symbol_rules: SymbolRulesSource | None = None,
        symbol_rules_refresh_s: float = 60.0,
        protections: ProtectionConfig | None = None,
    ):
        self.codec = codec
        #: A live exchange's filters (None on paper: the bundled ones): sizes and prices are rounded
        #: with them and an order below the exchange's minimum is rejected here, not by the exchange.
        self.symbol_rules = symbol_rules
        self.symbol_rules_refresh_s = symbol_rules_refresh_s
        self._base_config = config
        self._rules_loaded_at: float | None = None
        #: Reads the compliance monitor's symbol locks (cached by the reader).
        self.locks = locks
        self.portfolio = portfolio
        self.clock = clock
        self.lag = lag
        self.prices_topic = prices_topic
        self.hold_timeout = hold_timeout
        self._monotonic = monotonic
        self.desk = RiskDesk(
            config,
            brackets,
            clock=clock,
            funding=funding,
            max_lag_seconds=max_lag_seconds,
            max_market_data_age_seconds=max_market_data_age_seconds,
            protections=protections,
        )
        self.held: dict[tuple[str, int, int], _Held] = {}
        #: When each symbol's prices last reached this stage (monotonic seconds): a held analysis is
        #: decided without its prices only once the prices it waits for stopped coming, not while
        #: they are still being read (a long batch of prices ahead of it is progress, not silence).
        self._price_seen: dict[str, float] = {}

    async def start(self) -> None:
        self.desk.reset()
        await self._refresh_symbol_rules(force=True)
        approvals, signals = await self.portfolio.recent(self.desk.window)
        self.desk.restore_windows(approvals, signals)
        if self.clock == "event":
            positions, pending, realized = await self.portfolio.book_state()
            self.desk.book.restore(positions)
            self.desk.book.pending = list(pending)
            self.desk.book.realized = realized
            if self.desk.protections is not None:
                self.desk.restore_closes(await self.portfolio.closed_positions())

    async def _refresh_symbol_rules(self, *, force: bool = False) -> None:
        """The exchange's filters (recorded when the connector reads exchangeInfo), re-read every
        `symbol_rules_refresh_s`; until a symbol has them, its bundled rules apply."""
        if self.symbol_rules is None:
            return
        now = self._monotonic()
        if (
            not force
            and self._rules_loaded_at is not None
            and now - self._rules_loaded_at < self.symbol_rules_refresh_s
        ):
            return
        self._rules_loaded_at = now
        try:
            rules = await self.symbol_rules.symbol_rules()
        except Exception as error:  # the last ones read (or the bundled ones) stay in force
            logger.warning("risk: the exchange's symbol filters not read: %s", error)
            return
        self.desk.config = self._base_config.with_symbol_rules(rules)

    def reset(self) -> None:
        self.desk.reset()
        self.held.clear()
        self._price_seen.clear()

    async def recover(self) -> None:
        held = dict(self.held)
        self.reset()
        await self.start()
        self.held = held  # their records are still un-acked: keep waiting for them

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
        verdict_ids = [ids.verdict_id(a.event_id) for _, a in analyses]
        if self.clock == "event":
            existing = await self.portfolio.verdicts(verdict_ids) if analyses else {}
            return outcomes + await self._process_event_time(work, existing)
        snapshot: Snapshot | None = None
        existing = {}
        if analyses:
            await self._refresh_symbol_rules()
            # what the decisions read, at once (each read waits on its own round trip): a verdict
            # already made (a re-delivery), the portfolio, the symbol locks
            existing, snapshot, locks = await all_of(
                self.portfolio.verdicts(verdict_ids), self.portfolio.snapshot(), self._read_locks()
            )
            if locks is not None:
                self.desk.locks = locks
        exposures: list[Exposure] = list(snapshot.exposures) if snapshot is not None else []
        for record, item in work:
            if item is None or isinstance(item, MarketPrice):
                if item is not None:
                    self.desk.observe_price(item)
                outcomes.append(Outcome(record))
                continue
            stored = existing.get(ids.verdict_id(item.event_id))
            if stored is not None:
                outcomes.append(Outcome(record, produce=[stored]))  # re-delivery: the same verdict again
                continue
            assert snapshot is not None
            lag = self.lag.lag_seconds() if self.lag is not None else 0.0
            message = self.desk.decide(item, snapshot.equity, snapshot.trading_state, exposures, lag_seconds=lag)
            outcomes.append(Outcome(record, produce=[message], persist=[VerdictMade(message)]))
        return outcomes

    async def _read_locks(self) -> Mapping[str, SymbolLock] | None:
        return await self.locks() if self.locks is not None else None

    async def _process_event_time(
        self, work: list[tuple[InputRecord, MarketPrice | Analysis | None]], existing: dict[str, RiskVerdict]
    ) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for record, item in work:
            if item is None or isinstance(item, MarketPrice):
                if item is not None:
                    self.desk.observe_price(item)
                    self._price_seen[item.symbol] = self._monotonic()
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
        `force`, once the oldest has waited `hold_timeout` seconds and the prices it lacks have not
        advanced for as long: a quiet feed, not a slow one)."""
        outcomes: list[Outcome] = []
        if not self.held:
            return outcomes
        state = await self.portfolio.trading_state()
        if self.locks is not None:
            self.desk.locks = await self.locks()
        # A decision only ever adds its own symbol to the book (positions close only as prices are
        # applied), so the set found once, grown by each decision, stays a superset: cheap and safe.
        symbols = self.desk.symbols_in_use()
        # event-time order, ties by signal id: the order of the in-process replay (replay.engine)
        for key, held in sorted(
            self.held.items(), key=lambda item: (item[1].analysis.ts_event, item[1].analysis.signal_id)
        ):
            at = held.analysis.ts_event
            ready = self.desk.ready(at, symbols)
            if not ready and not (force and self._quiet(held, at, symbols) >= self.hold_timeout):
                break
            waited = self._monotonic() - held.since
            if not ready:
                logger.warning(
                    "risk: deciding %s without prices up to %s (waited %.1fs)", held.analysis.signal_id, at, waited
                )
            message = self.desk.decide_on_book(held.analysis, state)
            symbols.add(held.analysis.symbol)
            del self.held[key]
            outcomes.append(Outcome(held.record, produce=[message], persist=[VerdictMade(message)]))
        return outcomes

    def _quiet(self, held: _Held, at: datetime, symbols: set[str]) -> float:
        """Seconds the analysis has waited with none of the prices it lacks arriving."""
        latest = self.desk.latest_tick
        lacking = [symbol for symbol in symbols if symbol not in latest or latest[symbol] < at]
        since = max([held.since, *(self._price_seen.get(symbol, held.since) for symbol in lacking)])
        return self._monotonic() - since
