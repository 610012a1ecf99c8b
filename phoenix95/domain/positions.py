"""Position lifecycle: open on a fill, mark to market on every price, close by stop-loss, take-profit,
liquidation or expiry, charge funding at funding times. Everything runs on event time.

Rules (in the order they are checked for each price event after the last one applied):

1. expiry: the event is at or past ``auto_close_at`` (opened + 48 h): funding up to that time is
   charged, then the position closes at the last price known before it, at ``auto_close_at``;
2. funding: every funding time (multiples of 8 h UTC) passed since the last event charges
   ``side x quantity x mark x rate`` (longs pay a positive rate) at the mark known at that time;
3. adverse move: the price path of the event starts at its open (or where the last event ended)
   and runs to its low (long) / high (short). Of the stop-loss and the liquidation price, the one
   closer to the start is crossed first: the stop-loss closes with a market order at the stop (at
   the start price when the event gapped past it); the liquidation price liquidates (status
   ``liquidated``, the isolated margin is lost). The risk stage only approves positions whose stop
   lies before their liquidation price, so the stop normally comes first;
4. mark price: an explicit mark price at or beyond the liquidation price liquidates (Binance
   liquidates on the mark price, which can run ahead of the last price);
5. take-profit: the favourable extreme reaches the target: a market order at the target. When the
   stop and the target are both inside one candle the stop is assumed first (conservative);
6. otherwise a tick with unrealized PnL, PnL %, ROE, margin ratio and distance to liquidation.

Exits pay slippage (the execution model) and the taker fee.

Realized PnL = side x quantity x (exit - entry) - entry fee - exit fee - funding paid.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

from phoenix95.domain.brackets import Bracket
from phoenix95.domain.config import TradingConfig
from phoenix95.domain.execution import Fill, MarketTick, fill_market_order
from phoenix95.domain.margin import (
    distance_to_liquidation_pct,
    initial_margin,
    liquidation_price,
    margin_ratio,
)
from phoenix95.domain.risk import protective_prices
from phoenix95.domain.values import ZERO, Side, direction, exit_order_side, money

Status = Literal["open", "closed", "liquidated", "expired"]
EventKind = Literal["opened", "tick", "funding", "closed", "liquidated", "expired"]
CloseReason = Literal["stop_loss", "take_profit", "liquidation", "expiry", "reduce_signal", "manual"]
FundingRate = Callable[[str, datetime], Decimal]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PCT = Decimal("0.0001")


@dataclass(frozen=True)
class Position:
    position_id: str
    order_id: str
    signal_id: str
    symbol: str
    side: Side
    quantity: Decimal
    leverage: int
    margin_mode: str
    entry_price: Decimal
    margin: Decimal
    maint_margin_ratio: Decimal
    maint_cum: Decimal
    stop_loss_price: Decimal
    take_profit_price: Decimal
    liquidation_price: Decimal
    entry_fee: Decimal
    opened_at: datetime
    auto_close_at: datetime
    next_funding_at: datetime
    last_price: Decimal
    mark_price: Decimal
    last_event_time: datetime
    funding_paid: Decimal = ZERO
    status: Status = "open"
    exit_price: Decimal | None = None
    exit_fee: Decimal = ZERO
    closed_at: datetime | None = None
    close_reason: CloseReason | None = None
    realized_pnl: Decimal = ZERO
    max_roe: Decimal = ZERO
    min_roe: Decimal = ZERO

    @property
    def is_open(self) -> bool:
        return self.status == "open"

    @property
    def notional(self) -> Decimal:
        return self.quantity * self.entry_price


_FIELDS = frozenset(Position.__dataclass_fields__)


def roe_at(position: Position, mark: Decimal) -> Decimal:
    """Return on equity in % at a mark price (as `metrics` computes it)."""
    if position.margin <= 0:
        return ZERO
    return (
        direction(position.side) * position.quantity * (mark - position.entry_price) / position.margin * 100
    ).quantize(_PCT)


@dataclass(frozen=True)
class Metrics:
    unrealized_pnl: Decimal
    unrealized_pnl_percent: Decimal
    roe: Decimal
    maintenance_margin: Decimal
    margin_ratio: Decimal
    distance_to_liquidation: Decimal
    risk_level: str


@dataclass(frozen=True)
class PositionEvent:
    kind: EventKind
    time: datetime
    price: Decimal
    mark_price: Decimal
    metrics: Metrics
    funding_amount: Decimal = ZERO
    funding_rate: Decimal | None = None
    cause_id: str = ""


@dataclass(frozen=True)
class Update:
    position: Position
    events: tuple[PositionEvent, ...]


def evolve(position: Position, **changes: object) -> Position:
    """A copy of the (frozen) position with some fields changed; much cheaper than
    dataclasses.replace, which re-runs __init__ with all thirty fields on every price tick."""
    changed = copy.copy(position)
    for name, value in changes.items():
        if name not in _FIELDS:
            raise TypeError(f"Position has no field {name!r}")
        object.__setattr__(changed, name, value)
    return changed


def next_funding_time(after: datetime, interval: timedelta) -> datetime:
    """The first funding time strictly after `after` (funding times are multiples of the interval)."""
    elapsed = (after - _EPOCH) // interval
    return _EPOCH + (elapsed + 1) * interval


def risk_level(distance_pct: Decimal) -> str:
    if distance_pct < 5:
        return "CRITICAL"
    if distance_pct < 10:
        return "HIGH"
    if distance_pct < 20:
        return "MEDIUM"
    return "LOW"


def metrics(position: Position, price: Decimal, mark: Decimal) -> Metrics:
    s = direction(position.side)
    unrealized = s * position.quantity * (mark - position.entry_price)
    roe = unrealized / position.margin * 100 if position.margin > 0 else ZERO
    maintenance = max(position.quantity * mark * position.maint_margin_ratio - position.maint_cum, ZERO)
    distance = distance_to_liquidation_pct(position.side, mark, position.liquidation_price)
    return Metrics(
        unrealized_pnl=money(unrealized),
        unrealized_pnl_percent=(s * (price - position.entry_price) / position.entry_price * 100).quantize(_PCT),
        roe=roe.quantize(_PCT),
        maintenance_margin=money(maintenance),
        margin_ratio=margin_ratio(maintenance, position.margin + unrealized).quantize(_PCT),
        distance_to_liquidation=distance.quantize(_PCT),
        risk_level=risk_level(distance),
    )


def open_position(
    *,
    position_id: str,
    order_id: str,
    signal_id: str,
    symbol: str,
    side: Side,
    fill: Fill,
    leverage: int,
    margin_mode: str,
    brackets: Sequence[Bracket],
    config: TradingConfig,
    tick_size: Decimal,
) -> Update:
    """Open an isolated position from its entry fill. SL/TP are re-anchored on the fill price."""
    margin = money(initial_margin(fill.notional, leverage))
    quote = liquidation_price(
        side=side, quantity=fill.quantity, entry_price=fill.price, wallet_balance=margin, brackets=brackets
    )
    stop, target = protective_prices(side, fill.price, config, tick_size)
    position = Position(
        position_id=position_id,
        order_id=order_id,
        signal_id=signal_id,
        symbol=symbol,
        side=side,
        quantity=fill.quantity,
        leverage=leverage,
        margin_mode=margin_mode,
        entry_price=fill.price,
        margin=margin,
        maint_margin_ratio=quote.bracket.maint_margin_ratio,
        maint_cum=quote.bracket.cum,
        stop_loss_price=stop,
        take_profit_price=target,
        liquidation_price=money(quote.price),
        entry_fee=fill.fee,
        opened_at=fill.time,
        auto_close_at=fill.time + config.max_hold,
        next_funding_at=next_funding_time(fill.time, config.funding_interval),
        last_price=fill.price,
        mark_price=fill.price,
        last_event_time=fill.time,
    )
    event = PositionEvent("opened", fill.time, fill.price, fill.price, metrics(position, fill.price, fill.price))
    return Update(position, (event,))


def on_price(
    position: Position,
    tick: MarketTick,
    *,
    config: TradingConfig,
    tick_size: Decimal,
    funding_rate: FundingRate,
    exchange_settles: bool = False,
) -> Update:
    """Apply one market price event (event time) to an open position. `exchange_settles`: a live
    exchange holds the stop-loss and take-profit, liquidates and charges funding: only the mark is
    applied here; the exchange's closing fills close the position (`close_by_order`), also at expiry
    (`expiry_due`: the stage sends a close order), and its funding payments are added by `apply_funding`."""
    if not position.is_open or tick.time <= position.last_event_time:
        return Update(position, ())
    events: list[PositionEvent] = []
    if tick.time >= position.auto_close_at and not exchange_settles:
        position = _charge_funding(position, position.auto_close_at, config, funding_rate, events)
        closed = _close(
            position,
            reference_price=position.last_price,
            time=position.auto_close_at,
            reason="expiry",
            config=config,
            tick_size=tick_size,
            cause_id=tick.event_id,
        )
        return Update(closed.position, (*events, *closed.events))
    if exchange_settles:
        return _mark(position, tick, events)
    position = _charge_funding(position, tick.time, config, funding_rate, events)

    s = direction(position.side)
    start = tick.open if tick.open is not None else position.last_price
    worst = (tick.low if s > 0 else tick.high) or tick.price
    best = (tick.high if s > 0 else tick.low) or tick.price
    worst = min(worst, start, tick.price) if s > 0 else max(worst, start, tick.price)
    stop, liquidation = position.stop_loss_price, position.liquidation_price
    # The adverse level closer to the start is crossed first (for a long: the higher one).
    levels = [(stop, "stop_loss")] + ([(liquidation, "liquidation")] if liquidation > 0 else [])
    levels.sort(key=lambda level: -s * level[0])
    for level, kind in levels:
        if s * (worst - level) > 0:
            continue
        gapped = s * (start - level) < 0
        if kind == "liquidation":
            liquidated = _liquidate(position, tick)
            return Update(liquidated.position, (*events, *liquidated.events))
        closed = _close(
            position,
            reference_price=start if gapped else level,
            time=tick.time,
            reason="stop_loss",
            config=config,
            tick_size=tick_size,
            cause_id=tick.event_id,
            volume=tick.volume,
        )
        return Update(closed.position, (*events, *closed.events))
    if tick.mark_price is not None and liquidation > 0 and s * (tick.mark_price - liquidation) <= 0:
        liquidated = _liquidate(position, tick)
        return Update(liquidated.position, (*events, *liquidated.events))
    if s * (best - position.take_profit_price) >= 0:
        closed = _close(
            position,
            reference_price=position.take_profit_price,
            time=tick.time,
            reason="take_profit",
            config=config,
            tick_size=tick_size,
            cause_id=tick.event_id,
            volume=tick.volume,
        )
        return Update(closed.position, (*events, *closed.events))

    return _mark(position, tick, events)


def _mark(position: Position, tick: MarketTick, events: list[PositionEvent]) -> Update:
    """A tick: unrealized PnL and ROE on the mark price (the exchange's, when the feed carries it)."""
    current = metrics(position, tick.price, tick.mark)
    position = evolve(
        position,
        last_price=tick.price,
        mark_price=tick.mark,
        last_event_time=tick.time,
        max_roe=max(position.max_roe, current.roe),
        min_roe=min(position.min_roe, current.roe),
    )
    events.append(PositionEvent("tick", tick.time, tick.price, tick.mark, current, cause_id=tick.event_id))
    return Update(position, tuple(events))


def expiry_due(position: Position, now: datetime) -> bool:
    """An open position held to its expiry (with a live exchange the stage closes it by an order)."""
    return position.is_open and now >= position.auto_close_at


def apply_funding(position: Position, *, amount_paid: Decimal, time: datetime, cause_id: str) -> Update:
    """A funding payment the exchange made (`amount_paid` > 0: the position paid it), added to the
    position's funding (its realized PnL at close subtracts it)."""
    if not position.is_open:
        return Update(position, ())
    at = max(time, position.last_event_time)
    position = evolve(position, funding_paid=position.funding_paid + amount_paid)
    event = PositionEvent(
        "funding",
        at,
        position.last_price,
        position.mark_price,
        metrics(position, position.last_price, position.mark_price),
        funding_amount=amount_paid,
        cause_id=cause_id,
    )
    return Update(position, (event,))


def on_clock(
    position: Position,
    now: datetime,
    *,
    config: TradingConfig,
    tick_size: Decimal,
    funding_rate: FundingRate,
    exchange_settles: bool = False,
) -> Update:
    """Monitoring: expiry and funding at `now` with the last known price, and one tick at `now`
    (`exchange_settles`: neither expiry nor funding, see `on_price`). The position's own time
    (`last_event_time`, the last price applied) does not move."""
    if not position.is_open or now <= position.last_event_time:
        return Update(position, ())
    events: list[PositionEvent] = []
    if now >= position.auto_close_at and not exchange_settles:
        position = _charge_funding(position, position.auto_close_at, config, funding_rate, events)
        closed = _close(
            position,
            reference_price=position.last_price,
            time=position.auto_close_at,
            reason="expiry",
            config=config,
            tick_size=tick_size,
            cause_id="clock",
        )
        return Update(closed.position, (*events, *closed.events))
    if not exchange_settles:
        position = _charge_funding(position, now, config, funding_rate, events)
    current = metrics(position, position.last_price, position.mark_price)
    # The position's time stays its last price's: a price still on its way (a stage behind the price
    # stream, or catching up after a restart) is applied when it arrives, its stop, target and
    # liquidation crossings with it, instead of being dropped as older than this tick.
    events.append(PositionEvent("tick", now, position.last_price, position.mark_price, current, cause_id="clock"))
    return Update(position, tuple(events))


def close_by_order(
    position: Position,
    *,
    fill: Fill,
    config: TradingConfig,
    funding_rate: FundingRate,
    cause_id: str,
    reason: CloseReason = "reduce_signal",
    exchange_settles: bool = False,
) -> Update:
    """A reduce-only close filled by the exchange: requested by a signal while trading is REDUCING
    (`reduce_signal`), by the kill switch (`manual`, `p95 halt --flatten`), or a live exchange's own
    stop-loss or take-profit that fired (`stop_loss`, `take_profit`, with `exchange_settles`)."""
    if not position.is_open:
        return Update(position, ())
    events: list[PositionEvent] = []
    time = max(fill.time, position.last_event_time)
    if not exchange_settles:
        position = _charge_funding(position, time, config, funding_rate, events)
    closed = _settle(position, fill=fill, time=time, reason=reason, cause_id=cause_id)
    return Update(closed.position, (*events, *closed.events))


def _charge_funding(
    position: Position,
    until: datetime,
    config: TradingConfig,
    funding_rate: FundingRate,
    events: list[PositionEvent],
) -> Position:
    s = direction(position.side)
    while position.next_funding_at <= until:
        at = position.next_funding_at
        rate = funding_rate(position.symbol, at)
        amount = money(s * position.quantity * position.mark_price * rate)
        position = evolve(
            position,
            funding_paid=position.funding_paid + amount,
            next_funding_at=at + config.funding_interval,
        )
        events.append(
            PositionEvent(
                "funding",
                at,
                position.last_price,
                position.mark_price,
                metrics(position, position.last_price, position.mark_price),
                funding_amount=amount,
                funding_rate=rate,
                cause_id=f"funding:{at.isoformat()}",
            )
        )
    return position


def _close(
    position: Position,
    *,
    reference_price: Decimal,
    time: datetime,
    reason: CloseReason,
    config: TradingConfig,
    tick_size: Decimal,
    cause_id: str,
    volume: Decimal | None = None,
) -> Update:
    fill = fill_market_order(
        side=exit_order_side(position.side),
        quantity=position.quantity,
        reference_price=reference_price,
        time=time,
        config=config,
        tick_size=tick_size,
        volume=volume,
    )
    return _settle(position, fill=fill, time=time, reason=reason, cause_id=cause_id)


def realized_pnl(
    side: Side, quantity: Decimal, entry_price: Decimal, exit_price: Decimal, fees: Decimal, funding_paid: Decimal
) -> Decimal:
    """A closed position's realized PnL: side x quantity x (exit - entry) - every fee paid (entry and exit)
    - the funding paid, at money precision (half-even)."""
    return money(direction(side) * quantity * (exit_price - entry_price) - fees - funding_paid)


def _settle(position: Position, *, fill: Fill, time: datetime, reason: CloseReason, cause_id: str) -> Update:
    realized = realized_pnl(
        position.side,
        position.quantity,
        position.entry_price,
        fill.price,
        position.entry_fee + fill.fee,
        position.funding_paid,
    )
    status: Status = "expired" if reason == "expiry" else "closed"
    closed = evolve(
        position,
        status=status,
        exit_price=fill.price,
        exit_fee=fill.fee,
        closed_at=time,
        close_reason=reason,
        realized_pnl=realized,
        last_price=fill.price,
        mark_price=fill.price,
        last_event_time=time,
    )
    kind: EventKind = "expired" if reason == "expiry" else "closed"
    event = PositionEvent(
        kind, time, fill.price, fill.price, metrics(closed, fill.price, fill.price), cause_id=cause_id
    )
    return Update(closed, (event,))


def _liquidate(position: Position, tick: MarketTick) -> Update:
    """Liquidated at the liquidation price: the whole isolated margin is lost."""
    price = position.liquidation_price
    realized = money(-position.margin - position.entry_fee - position.funding_paid)
    closed = evolve(
        position,
        status="liquidated",
        exit_price=price,
        exit_fee=ZERO,
        closed_at=tick.time,
        close_reason="liquidation",
        realized_pnl=realized,
        last_price=tick.price,
        mark_price=price,
        last_event_time=tick.time,
    )
    event = PositionEvent(
        "liquidated", tick.time, tick.price, price, metrics(closed, price, price), cause_id=tick.event_id
    )
    return Update(closed, (event,))


def default_funding(config: TradingConfig) -> FundingRate:
    def rate(symbol: str, at: datetime) -> Decimal:
        return config.default_funding_rate

    return rate
