"""Risk verdicts: approve or reject a scored signal, with every reason as a code, and the full plan.

The reason codes follow NautilusTrader's style. All checks run, so a rejected verdict lists every rule
it broke, not only the first. Sizing is fractional Kelly (see `sizing`); entry, stop-loss, take-profit
and liquidation prices, margins and a one-day VaR go into the verdict so it can be audited and
replayed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Literal, Protocol

from phoenix95.domain.brackets import Bracket, BracketTable, bracket_for
from phoenix95.domain.config import TradingConfig
from phoenix95.domain.margin import initial_margin, liquidation_price, maintenance_margin
from phoenix95.domain.sizing import Sizing, size_position
from phoenix95.domain.trading_state import TradingState
from phoenix95.domain.values import ZERO, Side, direction, money, round_price
from phoenix95.domain.volatility import value_at_risk


class RiskReason(StrEnum):
    """Why a risk verdict rejects a signal (the codes of `RiskVerdict.reasons`)."""

    SYMBOL_NOT_ALLOWED = "SYMBOL_NOT_ALLOWED"
    CONFIDENCE_BELOW_MIN = "CONFIDENCE_BELOW_MIN"
    SCORE_BELOW_THRESHOLD = "SCORE_BELOW_THRESHOLD"
    TRADING_HALTED = "TRADING_HALTED"
    TRADING_REDUCING = "TRADING_REDUCING"
    MAX_OPEN_POSITIONS = "MAX_OPEN_POSITIONS"
    NOTIONAL_EXCEEDS_MAX_PER_ORDER = "NOTIONAL_EXCEEDS_MAX_PER_ORDER"
    EXPOSURE_EXCEEDS_MAX_PER_SYMBOL = "EXPOSURE_EXCEEDS_MAX_PER_SYMBOL"
    SUBMIT_RATE_EXCEEDED = "SUBMIT_RATE_EXCEEDED"
    SIGNAL_STALE = "SIGNAL_STALE"
    DUPLICATE_SIGNAL = "DUPLICATE_SIGNAL"
    INSUFFICIENT_MARGIN = "INSUFFICIENT_MARGIN"
    LEVERAGE_EXCEEDS_BRACKET = "LEVERAGE_EXCEEDS_BRACKET"
    #: Kelly gives no edge (p <= 1/(1+b)) or the size rounds down to zero / below the exchange minimum.
    POSITION_SIZE_ZERO = "POSITION_SIZE_ZERO"
    #: The liquidation price would be reached before the stop-loss (with the liquidation buffer).
    LIQUIDATION_BEFORE_STOP = "LIQUIDATION_BEFORE_STOP"
    #: The compliance monitor locked the symbol (or all symbols) after K stop-losses within T minutes.
    STOPLOSS_GUARD = "STOPLOSS_GUARD"
    #: The symbol's position closed less than the cooldown ago: no new entry on it yet.
    COOLDOWN = "COOLDOWN"
    #: The signal's price is further than the collar from the last market price (a fat finger).
    PRICE_COLLAR = "PRICE_COLLAR"
    #: The sized order is below the exchange's minimum notional or minimum quantity (its filters):
    #: rejected here rather than by the exchange.
    BELOW_EXCHANGE_MINIMUM = "BELOW_EXCHANGE_MINIMUM"


#: The symbol a lock on every symbol is kept under.
ALL_SYMBOLS = "*"


@dataclass(frozen=True)
class SymbolLock:
    """A protection's lock on a symbol (or on `ALL_SYMBOLS`) until a time (compliance monitor)."""

    symbol: str
    reason: RiskReason
    until: datetime
    detail: str = ""


@dataclass(frozen=True)
class RiskRequest:
    signal_id: str
    symbol: str
    side: Side
    price: Decimal
    confidence: Decimal
    phoenix95_score: Decimal
    final_confidence: Decimal
    strategy: str
    timeframe: str
    signal_time: datetime


@dataclass(frozen=True)
class Exposure:
    """An open position, or an approved verdict whose position is not open yet (`pending`)."""

    reference_id: str
    symbol: str
    side: Side
    quantity: Decimal
    notional: Decimal
    margin: Decimal
    opened_at: datetime
    pending: bool = False


@dataclass(frozen=True)
class RecentSignal:
    signal_id: str
    symbol: str
    side: Side
    strategy: str
    timeframe: str
    time: datetime


class Activity(Protocol):
    """Recent approvals and signals, indexed for the rate and duplicate checks (see `activity`)."""

    def approvals_since(self, start: datetime) -> int: ...

    def find_duplicate(self, request: RiskRequest, window: timedelta) -> RecentSignal | None: ...


@dataclass(frozen=True)
class ExposureSummary:
    """What the checks need of the exposures: how many, the margin they use, the notional per symbol."""

    count: int = 0
    used_margin: Decimal = ZERO
    notional_by_symbol: Mapping[str, Decimal] = field(default_factory=dict)

    @classmethod
    def of(cls, exposures: Sequence[Exposure]) -> ExposureSummary:
        margin = ZERO
        notional: dict[str, Decimal] = {}
        for e in exposures:
            margin += e.margin
            notional[e.symbol] = notional.get(e.symbol, ZERO) + e.notional
        return cls(len(exposures), margin, notional)


@dataclass(frozen=True)
class PortfolioView:
    equity: Decimal
    trading_state: TradingState = TradingState.ACTIVE
    exposures: tuple[Exposure, ...] = ()
    #: When given, the checks use it instead of summing `exposures` (the paper book keeps one up
    #: to date); `exposures` is then needed only while REDUCING (to find a position to close).
    summary: ExposureSummary | None = None
    recent_approvals: tuple[datetime, ...] = ()
    recent_signals: tuple[RecentSignal, ...] = ()
    pipeline_lag_seconds: float = 0.0
    #: When given, the rate and duplicate checks ask it instead of scanning the two tuples above
    #: (a live desk sees thousands of recent signals a minute).
    activity: Activity | None = None
    #: The compliance monitor's locks in force, by symbol (`ALL_SYMBOLS` for every symbol).
    locks: Mapping[str, SymbolLock] = field(default_factory=dict)

    def exposure_summary(self) -> ExposureSummary:
        return self.summary if self.summary is not None else ExposureSummary.of(self.exposures)


@dataclass(frozen=True)
class MarketView:
    last_price: Decimal | None = None
    #: Daily volatility of the symbol's recent returns (None: not enough history for a VaR).
    daily_volatility: Decimal | None = None
    #: Seconds since the symbol's latest market price (live trading; None: no price seen).
    data_age_seconds: float | None = None


@dataclass(frozen=True)
class Plan:
    entry_price: Decimal
    stop_loss_price: Decimal
    take_profit_price: Decimal
    liquidation_price: Decimal
    quantity: Decimal
    notional: Decimal
    initial_margin: Decimal
    maintenance_margin: Decimal
    leverage: int
    margin_mode: str
    bracket: int
    maint_margin_ratio: Decimal
    bracket_max_leverage: int
    kelly: Decimal
    kelly_fraction: Decimal
    position_fraction: Decimal
    win_probability: Decimal
    payoff_ratio: Decimal
    equity: Decimal
    free_margin: Decimal
    var_1d_95: Decimal | None


@dataclass(frozen=True)
class Verdict:
    approved: bool
    reasons: tuple[RiskReason, ...]
    details: tuple[str, ...]
    intent: Literal["open", "close"] = "open"
    close_reference_id: str | None = None
    plan: Plan | None = None
    trading_state: TradingState = TradingState.ACTIVE

    @property
    def decision(self) -> str:
        return "APPROVED" if self.approved else "REJECTED"


@dataclass
class _Collector:
    reasons: list[RiskReason] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    def add(self, reason: RiskReason, detail: str) -> None:
        if reason not in self.reasons:
            self.reasons.append(reason)
        self.details.append(f"{reason.value}: {detail}")


def protective_prices(side: Side, entry: Decimal, config: TradingConfig, tick: Decimal) -> tuple[Decimal, Decimal]:
    """Stop-loss and take-profit as a move in price from entry (2 % each by default)."""
    s = direction(side)
    stop = round_price(entry * (1 - s * config.stop_loss_pct), tick)
    target = round_price(entry * (1 + s * config.take_profit_pct), tick)
    return stop, target


def evaluate(
    request: RiskRequest,
    *,
    portfolio: PortfolioView,
    market: MarketView,
    config: TradingConfig,
    brackets: BracketTable,
    now: datetime,
    max_pipeline_lag_seconds: float | None = None,
    max_market_data_age_seconds: float | None = None,
) -> Verdict:
    """Decide on one scored signal. Pure: same inputs, same verdict."""
    cfg = config.for_symbol(request.symbol)
    found = _Collector()
    state = portfolio.trading_state

    if request.symbol not in cfg.allowed_symbols:
        found.add(RiskReason.SYMBOL_NOT_ALLOWED, f"{request.symbol} is not in the allowed symbols")
    if request.confidence < cfg.min_confidence:
        found.add(RiskReason.CONFIDENCE_BELOW_MIN, f"confidence {request.confidence} < {cfg.min_confidence}")
    if request.phoenix95_score < cfg.phoenix95_threshold:
        found.add(
            RiskReason.SCORE_BELOW_THRESHOLD,
            f"phoenix95 score {request.phoenix95_score} < {cfg.phoenix95_threshold}",
        )
    age = now - request.signal_time
    if age > cfg.signal_max_age:
        found.add(
            RiskReason.SIGNAL_STALE,
            f"signal is {age.total_seconds():.0f}s old > {cfg.signal_max_age.total_seconds():.0f}s",
        )
    if max_pipeline_lag_seconds is not None and portfolio.pipeline_lag_seconds > max_pipeline_lag_seconds:
        found.add(
            RiskReason.SIGNAL_STALE,
            f"pipeline lag {portfolio.pipeline_lag_seconds:.1f}s > {max_pipeline_lag_seconds:.1f}s",
        )
    if max_market_data_age_seconds is not None and (
        market.data_age_seconds is None or market.data_age_seconds > max_market_data_age_seconds
    ):
        seen = "no market data" if market.data_age_seconds is None else f"{market.data_age_seconds:.1f}s old"
        found.add(
            RiskReason.SIGNAL_STALE,
            f"market data of {request.symbol}: {seen} > {max_market_data_age_seconds:.0f}s (stale feed)",
        )
    if portfolio.activity is not None:
        duplicate = portfolio.activity.find_duplicate(request, cfg.duplicate_window)
    else:
        duplicate = _find_duplicate(request, portfolio.recent_signals, cfg.duplicate_window)
    if duplicate is not None:
        found.add(
            RiskReason.DUPLICATE_SIGNAL,
            f"same {request.symbol} {request.side} {request.strategy}/{request.timeframe} signal "
            f"{duplicate.signal_id} within {cfg.duplicate_window.total_seconds():.0f}s",
        )

    for key in (request.symbol, ALL_SYMBOLS):
        lock = portfolio.locks.get(key)
        if lock is not None and now < lock.until:
            found.add(
                lock.reason,
                f"{key} locked until {lock.until.isoformat()}" + (f" ({lock.detail})" if lock.detail else ""),
            )
    if cfg.price_collar_bps is not None and market.last_price is not None and market.last_price > 0:
        deviation_bps = abs(request.price - market.last_price) / market.last_price * 10000
        if deviation_bps > Decimal(str(cfg.price_collar_bps)):
            found.add(
                RiskReason.PRICE_COLLAR,
                f"signal price {request.price} is {deviation_bps:.0f} bps from the last market price "
                f"{market.last_price} > {cfg.price_collar_bps} bps",
            )

    # Trading state: HALTED stops everything; REDUCING lets through only a signal that closes an
    # opposite open position on the symbol.
    if state is TradingState.HALTED:
        found.add(RiskReason.TRADING_HALTED, "trading is HALTED")
    elif state is TradingState.REDUCING:
        target = _reducible(request, portfolio.exposures)
        if target is None:
            found.add(RiskReason.TRADING_REDUCING, "trading is REDUCING and no opposite open position to reduce")
        elif not found.reasons:
            return Verdict(
                approved=True,
                reasons=(),
                details=(f"REDUCING: closes {target.side} position {target.reference_id}",),
                intent="close",
                close_reference_id=target.reference_id,
                trading_state=state,
            )

    window_start = now - timedelta(minutes=1)
    if portfolio.activity is not None:
        submitted = portfolio.activity.approvals_since(window_start)
    else:
        submitted = sum(1 for t in portfolio.recent_approvals if t > window_start)
    if submitted >= cfg.max_orders_per_minute:
        found.add(
            RiskReason.SUBMIT_RATE_EXCEEDED, f"{submitted} approvals in the last minute >= {cfg.max_orders_per_minute}"
        )
    summary = portfolio.exposure_summary()
    open_count = summary.count
    if open_count >= cfg.max_open_positions:
        found.add(RiskReason.MAX_OPEN_POSITIONS, f"{open_count} open positions >= {cfg.max_open_positions}")

    plan = None
    if request.symbol in brackets and request.price > 0:
        plan = _plan(request, portfolio, summary, market, cfg, brackets.for_symbol(request.symbol), found)
    return Verdict(
        approved=not found.reasons,
        reasons=tuple(found.reasons),
        details=tuple(found.details),
        plan=plan,
        trading_state=state,
    )


def _plan(
    request: RiskRequest,
    portfolio: PortfolioView,
    summary: ExposureSummary,
    market: MarketView,
    cfg: TradingConfig,
    symbol_brackets: Sequence[Bracket],
    found: _Collector,
) -> Plan:
    rules = cfg.rules(request.symbol)
    entry = request.price
    stop, target = protective_prices(request.side, entry, cfg, rules.tick_size)
    free_margin = portfolio.equity - summary.used_margin
    sizing: Sizing = size_position(
        win_probability=request.final_confidence,
        stop_distance=cfg.stop_loss_pct,
        target_distance=cfg.take_profit_pct,
        equity=portfolio.equity,
        entry_price=entry,
        leverage=cfg.leverage,
        kelly_fraction=cfg.kelly_fraction,
        max_position_fraction=cfg.max_position_fraction,
        step_size=rules.step_size,
    )
    if sizing.quantity <= 0:
        found.add(
            RiskReason.POSITION_SIZE_ZERO,
            f"Kelly {sizing.kelly:.4f} at p={request.final_confidence}, b={sizing.payoff_ratio} gives no position",
        )
    elif sizing.notional < rules.min_notional:
        found.add(
            RiskReason.BELOW_EXCHANGE_MINIMUM,
            f"notional {sizing.notional} below the exchange minimum {rules.min_notional}",
        )
    elif sizing.quantity < rules.min_qty:
        found.add(
            RiskReason.BELOW_EXCHANGE_MINIMUM,
            f"quantity {sizing.quantity} below the exchange minimum {rules.min_qty} {request.symbol}",
        )
    notional = sizing.notional
    margin = initial_margin(notional, cfg.leverage) if notional > 0 else ZERO
    # Leverage and maintenance margin follow the bracket of the notional at entry; the liquidation
    # price re-checks the bracket at its own notional (see margin.liquidation_price).
    bracket = bracket_for(symbol_brackets, notional)
    maintenance = maintenance_margin(notional, bracket) if notional > 0 else ZERO
    liquidation = ZERO
    if notional > 0:
        liquidation = liquidation_price(
            side=request.side,
            quantity=sizing.quantity,
            entry_price=entry,
            wallet_balance=margin,
            brackets=symbol_brackets,
        ).price

    if cfg.leverage > bracket.initial_leverage:
        found.add(
            RiskReason.LEVERAGE_EXCEEDS_BRACKET,
            f"leverage {cfg.leverage}x > {bracket.initial_leverage}x allowed in bracket {bracket.bracket}",
        )
    if notional > cfg.max_notional_per_order:
        found.add(RiskReason.NOTIONAL_EXCEEDS_MAX_PER_ORDER, f"notional {notional} > {cfg.max_notional_per_order}")
    symbol_exposure = summary.notional_by_symbol.get(request.symbol, ZERO)
    if notional > 0 and symbol_exposure + notional > cfg.max_exposure_per_symbol:
        found.add(
            RiskReason.EXPOSURE_EXCEEDS_MAX_PER_SYMBOL,
            f"{request.symbol} exposure {symbol_exposure} + {notional} > {cfg.max_exposure_per_symbol}",
        )
    entry_fee = notional * cfg.taker_fee_rate
    if notional > 0 and margin + entry_fee > free_margin:
        found.add(
            RiskReason.INSUFFICIENT_MARGIN,
            f"margin {money(margin)} + fee {money(entry_fee)} > free {money(free_margin)}",
        )
    if notional > 0 and liquidation > 0:
        stop_distance = abs(entry - stop)
        liquidation_distance = abs(entry - liquidation)
        if liquidation_distance < stop_distance * (1 + cfg.liquidation_buffer):
            found.add(
                RiskReason.LIQUIDATION_BEFORE_STOP,
                f"liquidation at {money(liquidation)} is within the stop {stop} plus the {cfg.liquidation_buffer:%} buffer",
            )
    var = value_at_risk(notional, market.daily_volatility) if notional > 0 else None
    return Plan(
        entry_price=entry,
        stop_loss_price=stop,
        take_profit_price=target,
        liquidation_price=money(liquidation),
        quantity=sizing.quantity,
        notional=money(notional),
        initial_margin=money(margin),
        maintenance_margin=money(maintenance),
        leverage=cfg.leverage,
        margin_mode=cfg.margin_mode,
        bracket=bracket.bracket,
        maint_margin_ratio=bracket.maint_margin_ratio,
        bracket_max_leverage=bracket.initial_leverage,
        kelly=sizing.kelly.quantize(Decimal("0.000001")),
        kelly_fraction=cfg.kelly_fraction,
        position_fraction=sizing.position_fraction.quantize(Decimal("0.000001")),
        win_probability=sizing.win_probability,
        payoff_ratio=sizing.payoff_ratio,
        equity=money(portfolio.equity),
        free_margin=money(free_margin),
        var_1d_95=money(var) if var is not None else None,
    )


def _find_duplicate(request: RiskRequest, recent: Sequence[RecentSignal], window: timedelta) -> RecentSignal | None:
    for other in recent:
        if (
            other.signal_id != request.signal_id
            and other.symbol == request.symbol
            and other.side == request.side
            and other.strategy == request.strategy
            and other.timeframe == request.timeframe
            and abs(request.signal_time - other.time) <= window
        ):
            return other
    return None


def _reducible(request: RiskRequest, exposures: Sequence[Exposure]) -> Exposure | None:
    candidates = [e for e in exposures if e.symbol == request.symbol and e.side != request.side and not e.pending]
    return min(candidates, key=lambda e: (e.opened_at, e.reference_id)) if candidates else None
