"""Builders with defaults for test data."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from phoenix95.connectors.exchange.brackets import bundled_brackets
from phoenix95.connectors.market_data import price_event
from phoenix95.domain import ids
from phoenix95.domain.book import PendingOrder
from phoenix95.domain.brackets import BracketTable
from phoenix95.domain.config import TradingConfig
from phoenix95.domain.execution import Fill
from phoenix95.domain.positions import Position, open_position
from phoenix95.domain.risk import Exposure, RecentSignal, RiskRequest
from phoenix95.domain.values import OrderSide, Side, entry_order_side, money
from phoenix95.schemas.messages import MarketPrice, Signal
from phoenix95.schemas.signal_input import build_signal

T0 = datetime(2021, 11, 15, 0, 0, tzinfo=UTC)
_counter = itertools.count()


def signal(
    *,
    symbol: str = "XRPUSDT",
    action: str = "buy",
    price: str | Decimal = "1.19",
    confidence: str = "0.9",
    at: datetime | None = None,
    signal_id: str | None = None,
    strategy: str | None = None,
    **fields: Any,
) -> Signal:
    payload: dict[str, Any] = {
        "symbol": symbol,
        "action": action,
        "price": str(price),
        "confidence": confidence,
        "strategy": strategy or f"test-{next(_counter)}",
        "timeframe": "5m",
        "source": "custom",
        "source_timestamp": (at or T0).isoformat(),
        **fields,
    }
    return build_signal(payload, producer="tests", signal_id=signal_id or str(uuid.uuid4()))


def price(
    *,
    symbol: str = "XRPUSDT",
    value: str | Decimal = "1.19",
    at: datetime | None = None,
    high: str | Decimal | None = None,
    low: str | Decimal | None = None,
    namespace: str = "",
    **fields: Any,
) -> MarketPrice:
    value = Decimal(str(value))
    for key in ("volume", "mark_price", "funding_rate"):
        if fields.get(key) is not None:
            fields[key] = Decimal(str(fields[key]))
    return price_event(
        symbol=symbol,
        time=at or T0,
        price=value,
        source=fields.pop("source", "test"),
        interval="5m",
        high=Decimal(str(high)) if high is not None else value,
        low=Decimal(str(low)) if low is not None else value,
        namespace=namespace,
        **fields,
    )


def price_path(
    values: list[str],
    *,
    symbol: str = "XRPUSDT",
    start: datetime = T0,
    step: timedelta = timedelta(minutes=5),
    namespace: str = "",
) -> list[MarketPrice]:
    return [price(symbol=symbol, value=v, at=start + step * (i + 1), namespace=namespace) for i, v in enumerate(values)]


# -- domain values: risk requests, exposures, positions, paper-book orders ---------------------------------


def candle_session(namespace: str, *, signals: int, prices: int) -> tuple[list[MarketPrice], list[Signal], list[Any]]:
    """Real XRPUSDT 5-minute candles and a signal every 15 minutes among them (two in three
    confident, buys and sells alternating): the prices, the signals, and both in event order."""
    from phoenix95.connectors.market_data import bundled_candle_events

    candles = bundled_candle_events("XRPUSDT", "5m", namespace=namespace)[:prices]
    start = candles[0].ts_event
    made = [
        signal(
            price=candles[min(i * 3, prices - 1)].price,
            confidence="0.9" if i % 3 else "0.3",
            action="buy" if i % 2 else "sell",
            at=start + timedelta(minutes=15 * i),
        )
        for i in range(signals)
    ]
    timeline = sorted([*candles, *made], key=lambda e: (e.ts_event, e.SCHEMA_NAME))
    return candles, made, timeline


def risk_request(
    *,
    symbol: str = "BTCUSDT",
    side: Side = "long",
    price: str | Decimal = "60000",
    confidence: str | Decimal = "0.9",
    phoenix95_score: str | Decimal = "1",
    final_confidence: str | Decimal = "0.8",
    strategy: str = "test",
    timeframe: str = "5m",
    at: datetime | None = None,
    signal_id: str | None = None,
) -> RiskRequest:
    """A scored signal as the risk stage sees it. With the default config and 10,000 USDT equity it
    is approved: Kelly 0.6 x 0.2 = 12 % of equity as margin, 0.4 BTC (24,000 USDT at 20x)."""
    return RiskRequest(
        signal_id=signal_id or str(uuid.uuid4()),
        symbol=symbol,
        side=side,
        price=Decimal(str(price)),
        confidence=Decimal(str(confidence)),
        phoenix95_score=Decimal(str(phoenix95_score)),
        final_confidence=Decimal(str(final_confidence)),
        strategy=strategy,
        timeframe=timeframe,
        signal_time=at or T0,
    )


def exposure(
    *,
    symbol: str = "ETHUSDT",
    side: Side = "long",
    quantity: str | Decimal = "0.1",
    notional: str | Decimal = "300",
    margin: str | Decimal = "15",
    opened_at: datetime | None = None,
    reference_id: str | None = None,
    pending: bool = False,
) -> Exposure:
    return Exposure(
        reference_id=reference_id or str(uuid.uuid4()),
        symbol=symbol,
        side=side,
        quantity=Decimal(str(quantity)),
        notional=Decimal(str(notional)),
        margin=Decimal(str(margin)),
        opened_at=opened_at or T0 - timedelta(hours=1),
        pending=pending,
    )


def recent_signal(request: RiskRequest, *, seconds_before: float = 30, **changes: Any) -> RecentSignal:
    """Another signal like `request` (same symbol, side, strategy, timeframe unless changed)."""
    fields_ = {
        "signal_id": str(uuid.uuid4()),
        "symbol": request.symbol,
        "side": request.side,
        "strategy": request.strategy,
        "timeframe": request.timeframe,
        "time": request.signal_time - timedelta(seconds=seconds_before),
        **changes,
    }
    return RecentSignal(**fields_)


def exact_fill(
    *,
    side: OrderSide = "buy",
    price: str | Decimal = "60000",
    quantity: str | Decimal = "0.1",
    at: datetime | None = None,
    config: TradingConfig | None = None,
) -> Fill:
    """A fill at exactly `price` (no slippage), paying the taker fee."""
    price, quantity = Decimal(str(price)), Decimal(str(quantity))
    notional = price * quantity
    return Fill(
        side=side,
        price=price,
        quantity=quantity,
        notional=notional,
        fee=money(notional * (config or TradingConfig()).taker_fee_rate),
        slippage_rate=Decimal(0),
        reference_price=price,
        time=at or T0,
    )


def position(
    *,
    symbol: str = "BTCUSDT",
    side: Side = "long",
    price: str | Decimal = "60000",
    quantity: str | Decimal = "0.1",
    at: datetime | None = None,
    leverage: int = 20,
    config: TradingConfig | None = None,
    brackets: BracketTable | None = None,
) -> Position:
    """An isolated position opened by the domain from an exact fill. The defaults are the worked
    example: BTCUSDT long 0.1 at 60,000 with 300 USDT margin, liquidation at 57,228.92."""
    config = config or TradingConfig()
    fill = exact_fill(side=entry_order_side(side), price=price, quantity=quantity, at=at, config=config)
    return open_position(
        position_id=str(uuid.uuid4()),
        order_id=str(uuid.uuid4()),
        signal_id=str(uuid.uuid4()),
        symbol=symbol,
        side=side,
        fill=fill,
        leverage=leverage,
        margin_mode="ISOLATED",
        brackets=(brackets or bundled_brackets()).for_symbol(symbol),
        config=config,
        tick_size=config.rules(symbol).tick_size,
    ).position


def pending_order(
    *,
    symbol: str = "BTCUSDT",
    side: Side = "long",
    quantity: str | Decimal = "0.1",
    at: datetime | None = None,
    verdict_id: str | None = None,
    leverage: int = 20,
) -> PendingOrder:
    """An approved opening verdict's market order as the paper book holds it (derived ids)."""
    verdict_id = verdict_id or str(uuid.uuid4())
    quantity = Decimal(str(quantity))
    return PendingOrder(
        order_id=ids.order_id(verdict_id),
        verdict_id=verdict_id,
        signal_id=str(uuid.uuid4()),
        symbol=symbol,
        side=side,
        intent="open",
        quantity=quantity,
        decision_time=at or T0,
        leverage=leverage,
        margin_mode="ISOLATED",
        planned_margin=Decimal(0),
        planned_notional=Decimal(0),
    )


def position_event(
    kind: str = "opened",
    *,
    position_id: str = "5f0c7a4e-1d2b-5c3d-9e8f-0a1b2c3d4e5f",
    risk_level: str = "LOW",
    close_reason: str | None = None,
    at: datetime | None = None,
    event_id: str | None = None,
) -> Any:
    """A PositionEvent as the positions stage publishes it (a 0.5 XRPUSDT long at 20x)."""
    from phoenix95.schemas.messages import PositionEvent

    now = at or T0
    closing = kind in ("closed", "liquidated", "expired")
    return PositionEvent.trusted(
        event_id=event_id or ids.derive("test-position-event", position_id, kind, risk_level, now.isoformat()),
        correlation_id=position_id,
        causation_id=None,
        ts_event=now,
        ts_ingest=now,
        schema_version=PositionEvent.SCHEMA_VERSION,
        producer="tests",
        position_id=position_id,
        order_id=ids.derive("test-order", position_id),
        signal_id=f"sig-{position_id[:8]}",
        symbol="XRPUSDT",
        side="long",
        kind=kind,
        status={"closed": "closed", "liquidated": "liquidated", "expired": "expired"}.get(kind, "open"),
        quantity=Decimal("100"),
        leverage=20,
        margin_mode="ISOLATED",
        entry_price=Decimal("0.5"),
        price=Decimal("0.51"),
        mark_price=Decimal("0.51"),
        margin=Decimal("2.5"),
        stop_loss_price=Decimal("0.49"),
        take_profit_price=Decimal("0.51"),
        liquidation_price=Decimal("0.476"),
        unrealized_pnl=Decimal(0),
        unrealized_pnl_percent=Decimal(0),
        roe=Decimal(0),
        maintenance_margin=Decimal("0.25"),
        margin_ratio=Decimal(0),
        distance_to_liquidation=Decimal(5),
        risk_level=risk_level,
        entry_fee=Decimal("0.02"),
        realized_pnl=Decimal("0.96") if closing else None,
        exit_price=Decimal("0.51") if closing else None,
        close_reason=close_reason if closing else None,
        opened_at=now,
        closed_at=now if closing else None,
        auto_close_at=now + timedelta(hours=48),
    )


def decided(signal: Signal, *, config: TradingConfig | None = None) -> tuple[Any, Any]:
    """The signal's analysis and the risk verdict the stages would make on it against an empty 10,000 USDT
    book (no market data), built by the same functions the stages use."""
    from phoenix95.domain.risk import MarketView, PortfolioView, evaluate
    from phoenix95.schemas.convert import analyze, risk_request, verdict_message

    analysis = analyze(signal)
    request = risk_request(analysis)
    decision = evaluate(
        request,
        portfolio=PortfolioView(equity=Decimal(10000)),
        market=MarketView(),
        config=config or TradingConfig(),
        brackets=bundled_brackets(),
        now=analysis.ts_event,
    )
    return analysis, verdict_message(analysis, decision, decided_at=analysis.ts_event)
