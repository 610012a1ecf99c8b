"""Pydantic models mirroring the Avro contracts in `schemas/avro/*.avsc` (a test fails on drift)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from phoenix95.schemas.envelope import (
    DecimalStr,
    Event,
    Identifier,
    Message,
    NonNegativeDecimal,
    PositiveDecimal,
    Price,
    ShortText,
    Symbol,
    UnitDecimal,
    UtcDatetime,
)

Action = Literal["buy", "sell", "long", "short"]
Side = Literal["long", "short"]
Timeframe = Literal["1m", "5m", "15m", "1h", "4h", "1d"]
Source = Literal["tradingview", "mt5", "telegram", "discord", "custom", "file", "replay", "demo", "api"]
RsiDecimal = Annotated[DecimalStr, Field(ge=0, le=100)]
Raw = Annotated[str, Field(max_length=65536)]
DetailText = Annotated[str, Field(max_length=2000)]


class Signal(Event):
    SCHEMA_NAME: ClassVar[str] = "phoenix95.Signal"

    signal_id: Identifier
    symbol: Symbol
    action: Action
    price: Price
    confidence: UnitDecimal = Decimal("0.8")
    strategy: Annotated[str, Field(max_length=50)] = "unknown"
    timeframe: Timeframe = "1h"
    rsi: RsiDecimal | None = None
    macd: DecimalStr | None = None
    volume: NonNegativeDecimal | None = None
    source: Source = "custom"
    source_timestamp: UtcDatetime | None = None
    raw: Raw | None = None

    @model_validator(mode="after")
    def _ids_agree(self) -> Signal:
        if self.signal_id != self.event_id or self.correlation_id != self.signal_id:
            raise ValueError("signal_id, event_id and correlation_id of a signal must be equal")
        return self


class ScoreAdjustment(Message):
    code: ShortText
    delta: DecimalStr
    detail: DetailText


class Analysis(Event):
    SCHEMA_NAME: ClassVar[str] = "phoenix95.Analysis"

    signal_id: Identifier
    symbol: Symbol
    action: Action
    side: Side
    price: Price
    confidence: UnitDecimal
    strategy: ShortText
    timeframe: Timeframe
    phoenix95_score: UnitDecimal
    final_confidence: UnitDecimal
    quality_score: UnitDecimal
    base_score: UnitDecimal
    analysis_type: ShortText
    adjustments: tuple[ScoreAdjustment, ...] = ()


class RiskPlan(Message):
    entry_price: PositiveDecimal
    stop_loss_price: DecimalStr
    take_profit_price: DecimalStr
    liquidation_price: DecimalStr
    quantity: NonNegativeDecimal
    notional: NonNegativeDecimal
    initial_margin: NonNegativeDecimal
    maintenance_margin: DecimalStr
    leverage: int
    margin_mode: ShortText
    bracket: int
    maint_margin_ratio: DecimalStr
    bracket_max_leverage: int
    kelly: DecimalStr
    kelly_fraction: DecimalStr
    position_fraction: DecimalStr
    win_probability: DecimalStr
    payoff_ratio: DecimalStr
    equity: DecimalStr
    free_margin: DecimalStr
    var_1d_95: DecimalStr | None = None


class RiskVerdict(Event):
    SCHEMA_NAME: ClassVar[str] = "phoenix95.RiskVerdict"

    verdict_id: Identifier
    signal_id: Identifier
    analysis_id: Identifier
    symbol: Symbol
    side: Side
    decision: Literal["APPROVED", "REJECTED"]
    intent: Literal["open", "close"] = "open"
    close_position_id: Identifier | None = None
    reasons: tuple[ShortText, ...] = ()
    details: tuple[DetailText, ...] = ()
    trading_state: Literal["ACTIVE", "REDUCING", "HALTED"]
    signal_time: UtcDatetime
    price: Price
    confidence: UnitDecimal
    phoenix95_score: UnitDecimal
    final_confidence: UnitDecimal
    plan: RiskPlan | None = None

    @property
    def approved(self) -> bool:
        return self.decision == "APPROVED"


class Fill(Message):
    price: PositiveDecimal
    quantity: PositiveDecimal
    notional: PositiveDecimal
    fee: DecimalStr
    fee_asset: ShortText = "USDT"
    slippage_rate: DecimalStr
    reference_price: PositiveDecimal
    filled_at: UtcDatetime
    price_event_id: Identifier | None = None
    #: A live exchange's trade ids of the fill (order.v2); empty on paper.
    trade_ids: tuple[ShortText, ...] = ()


class Order(Event):
    SCHEMA_NAME: ClassVar[str] = "phoenix95.Order"
    SCHEMA_VERSION: ClassVar[int] = 2

    order_id: Identifier
    client_order_id: Annotated[str, Field(pattern=r"^[.A-Z:/a-z0-9_-]{1,36}$")]
    verdict_id: Identifier
    signal_id: Identifier
    symbol: Symbol
    side: Literal["buy", "sell"]
    position_side: Side
    intent: Literal["open", "close"] = "open"
    close_position_id: Identifier | None = None
    order_type: Literal["market"] = "market"
    quantity: NonNegativeDecimal
    status: Literal["filled", "rejected"]
    reject_reason: ShortText | None = None
    requested_price: PositiveDecimal
    leverage: int
    margin_mode: ShortText
    exchange: ShortText = "paper"
    exchange_order_id: Identifier | None = None
    fill: Fill | None = None


class PositionEvent(Event):
    SCHEMA_NAME: ClassVar[str] = "phoenix95.PositionEvent"

    position_id: Identifier
    order_id: Identifier
    signal_id: Identifier
    symbol: Symbol
    side: Side
    kind: Literal["opened", "tick", "funding", "closed", "liquidated", "expired"]
    status: Literal["open", "closed", "liquidated", "expired"]
    quantity: PositiveDecimal
    leverage: int
    margin_mode: ShortText
    entry_price: PositiveDecimal
    price: PositiveDecimal
    mark_price: NonNegativeDecimal
    margin: NonNegativeDecimal
    stop_loss_price: DecimalStr
    take_profit_price: DecimalStr
    liquidation_price: DecimalStr
    unrealized_pnl: DecimalStr
    unrealized_pnl_percent: DecimalStr
    roe: DecimalStr
    maintenance_margin: DecimalStr
    margin_ratio: DecimalStr
    distance_to_liquidation: DecimalStr
    risk_level: Literal["CRITICAL", "HIGH", "MEDIUM", "LOW"]
    entry_fee: DecimalStr
    exit_fee: DecimalStr = Decimal(0)
    funding_paid: DecimalStr = Decimal(0)
    funding_amount: DecimalStr | None = None
    funding_rate: DecimalStr | None = None
    realized_pnl: DecimalStr | None = None
    exit_price: DecimalStr | None = None
    close_reason: ShortText | None = None
    opened_at: UtcDatetime
    closed_at: UtcDatetime | None = None
    auto_close_at: UtcDatetime
    equity: DecimalStr | None = None


class MarketPrice(Event):
    SCHEMA_NAME: ClassVar[str] = "phoenix95.MarketPrice"

    symbol: Symbol
    exchange: ShortText = "binance"
    market_type: ShortText = "futures"
    price: Price
    mark_price: Price | None = None
    bid: Price | None = None
    ask: Price | None = None
    open: Price | None = None
    high: Price | None = None
    low: Price | None = None
    volume: NonNegativeDecimal | None = None
    interval: ShortText | None = None
    funding_rate: DecimalStr | None = None
    source: ShortText = "candles"


class Header(Message):
    key: str
    value: bytes | None = None


class DeadLetter(Event):
    SCHEMA_NAME: ClassVar[str] = "phoenix95.DeadLetter"

    stage: ShortText
    reason: ShortText
    error: str
    source_topic: str
    source_partition: int
    source_offset: int
    source_timestamp: UtcDatetime | None = None
    original_key: bytes | None = None
    original_value: bytes
    original_headers: tuple[Header, ...] = ()


class ControlEvent(Event):
    """A change of control state or health (p95.control.events): a trading-state change with its actor, a
    protection trip, a symbol lock, a reconciliation difference, a worker or health event."""

    SCHEMA_NAME: ClassVar[str] = "phoenix95.ControlEvent"

    kind: ShortText
    severity: Literal["info", "warning", "critical"]
    actor: ShortText
    subject: ShortText | None = None
    state: ShortText | None = None
    reason: ShortText | None = None
    message: DetailText
    details: Raw = "{}"


#: Every message model by its Avro full name.
MODELS: dict[str, type[Event]] = {
    model.SCHEMA_NAME: model
    for model in (Signal, Analysis, RiskVerdict, Order, PositionEvent, MarketPrice, DeadLetter, ControlEvent)
}
