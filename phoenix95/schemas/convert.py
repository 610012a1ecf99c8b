"""Every pure builder between the wire messages (`schemas.messages`) and the domain (`domain/`).

The stages, the in-process replay, the storage rebuild, the CLI and the tests build messages with
these same functions, so a message means the same thing wherever it is made. No I/O here.

tick_of           MarketPrice -> domain MarketTick
fill_of           a filled Order -> domain Fill
pending_order     an approved RiskVerdict -> the PendingOrder the paper book holds
dead_letter       an input record that cannot be processed -> DeadLetter (with the original bytes)
analyze           Signal -> Analysis (the Phoenix-95 score)
verdict_message   Analysis + domain Verdict -> RiskVerdict
order_message     RiskVerdict + the exchange's answer -> Order
position_message  domain Position + PositionEvent -> PositionEvent message
close_verdict     an open Position -> the approved close RiskVerdict (kill switch, a live expiry)
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from phoenix95.agents.ports import InputRecord
from phoenix95.connectors.exchange.base import ExchangeOrder
from phoenix95.domain import ids
from phoenix95.domain.book import PendingOrder
from phoenix95.domain.execution import Fill as DomainFill
from phoenix95.domain.execution import MarketTick, OrderRejectReason
from phoenix95.domain.positions import Position
from phoenix95.domain.positions import PositionEvent as DomainEvent
from phoenix95.domain.risk import RiskRequest, Verdict
from phoenix95.domain.scoring import ScoringInput, score
from phoenix95.domain.values import entry_order_side, opposite, side_of
from phoenix95.schemas.codec import Reason
from phoenix95.schemas.envelope import utc_now
from phoenix95.schemas.messages import (
    Analysis,
    DeadLetter,
    Fill,
    Header,
    MarketPrice,
    Order,
    PositionEvent,
    RiskPlan,
    RiskVerdict,
    ScoreAdjustment,
    Signal,
)


def tick_of(price: MarketPrice) -> MarketTick:
    """The domain tick of a market price message."""
    return MarketTick(
        symbol=price.symbol,
        time=price.ts_event,
        price=price.price,
        mark_price=price.mark_price,
        open=price.open,
        high=price.high,
        low=price.low,
        volume=price.volume,
        funding_rate=price.funding_rate,
        event_id=price.event_id,
    )


def fill_of(order: Order) -> DomainFill:
    """The domain fill of a filled order."""
    assert order.fill is not None
    return DomainFill(
        side=order.side,
        price=order.fill.price,
        quantity=order.fill.quantity,
        notional=order.fill.notional,
        fee=order.fill.fee,
        slippage_rate=order.fill.slippage_rate,
        reference_price=order.fill.reference_price,
        time=order.fill.filled_at,
    )


def dead_letter(
    stage: str, record: InputRecord, reason: Reason | str, error: str, *, correlation_id: str | None = None
) -> DeadLetter:
    """A dead letter with the original bytes; its id is derived from the record's coordinates, so a
    re-delivered bad message is recorded once."""
    event_id = ids.derive("dead-letter", stage, record.topic, record.partition, record.offset)
    return DeadLetter.trusted(
        event_id=event_id,
        correlation_id=correlation_id or event_id,
        causation_id=None,
        ts_event=record.timestamp or utc_now(),
        ts_ingest=utc_now(),
        schema_version=DeadLetter.SCHEMA_VERSION,
        producer=stage,
        stage=stage,
        reason=str(reason),
        error=error[:4000],
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
        source_timestamp=record.timestamp,
        original_key=record.key,
        original_value=record.value,
        original_headers=tuple(Header.model_construct(key=k, value=v) for k, v in record.headers),
    )


def analyze(signal: Signal, *, producer: str = "analysis") -> Analysis:
    """The Phoenix-95 analysis of a signal (also used by replays and `p95 risk quote`)."""
    side = side_of(signal.action)
    result = score(
        ScoringInput(side=side, confidence=signal.confidence, rsi=signal.rsi, macd=signal.macd, volume=signal.volume)
    )
    return Analysis.trusted(
        event_id=ids.analysis_id(signal.event_id),
        correlation_id=signal.signal_id,
        causation_id=signal.event_id,
        ts_event=signal.ts_event,
        ts_ingest=utc_now(),
        schema_version=Analysis.SCHEMA_VERSION,
        producer=producer,
        signal_id=signal.signal_id,
        symbol=signal.symbol,
        action=signal.action,
        side=side,
        price=signal.price,
        confidence=signal.confidence,
        strategy=signal.strategy,
        timeframe=signal.timeframe,
        phoenix95_score=result.phoenix95_score,
        final_confidence=result.final_confidence,
        quality_score=result.quality_score,
        base_score=result.base_score,
        analysis_type=result.analysis_type,
        adjustments=tuple(
            ScoreAdjustment.model_construct(code=a.code, delta=a.delta, detail=a.detail) for a in result.adjustments
        ),
    )


def risk_request(analysis: Analysis) -> RiskRequest:
    """What the risk decision reads of an analysis (the risk stage, replays and `p95 risk quote`)."""
    return RiskRequest(
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


def order_message(
    verdict: RiskVerdict,
    client_order_id: str,
    placed: ExchangeOrder | None,
    reject_reason: OrderRejectReason | None,
    quantity: Decimal,
    exchange: str,
) -> Order:
    fill = None
    if (
        placed is not None
        and placed.status == "FILLED"
        and placed.fill_price is not None
        and placed.filled_at is not None
    ):
        fill = Fill.model_construct(
            price=placed.fill_price,
            quantity=placed.quantity,
            notional=placed.fill_price * placed.quantity,
            fee=placed.fee if placed.fee is not None else Decimal(0),
            fee_asset="USDT",
            slippage_rate=placed.slippage_rate if placed.slippage_rate is not None else Decimal(0),
            reference_price=placed.reference_price if placed.reference_price is not None else placed.fill_price,
            filled_at=placed.filled_at,
            price_event_id=None,
            trade_ids=placed.trade_ids,
        )
    plan = verdict.plan
    order_id = ids.order_id(verdict.verdict_id)
    return Order.trusted(
        event_id=order_id,
        correlation_id=verdict.signal_id,
        causation_id=verdict.event_id,
        ts_event=fill.filled_at if fill is not None else verdict.ts_event,
        ts_ingest=utc_now(),
        schema_version=Order.SCHEMA_VERSION,
        producer="execution",
        order_id=order_id,
        client_order_id=client_order_id,
        verdict_id=verdict.verdict_id,
        signal_id=verdict.signal_id,
        symbol=verdict.symbol,
        side=entry_order_side(verdict.side),
        position_side=verdict.side if verdict.intent == "open" else opposite(verdict.side),
        intent=verdict.intent,
        close_position_id=verdict.close_position_id,
        order_type="market",
        quantity=quantity,
        status="filled" if fill is not None else "rejected",
        # the message carries the code as plain text (stored, digested)
        reject_reason=None if fill is not None or reject_reason is None else reject_reason.value,
        requested_price=verdict.price,
        leverage=plan.leverage if plan is not None else 0,
        margin_mode=plan.margin_mode if plan is not None else "ISOLATED",
        exchange=exchange,
        # None, not "", when the exchange gave none (a live order refused before it got one): the
        # message must stay decodable downstream
        exchange_order_id=(placed.exchange_order_id or None) if placed is not None else None,
        fill=fill,
    )


def position_message(position: Position, event: DomainEvent, *, cause: str, equity: Decimal | None) -> PositionEvent:
    m = event.metrics
    closing = event.kind in ("closed", "liquidated", "expired")
    event_id = ids.derive(
        "position-event", position.position_id, event.kind, event.cause_id or cause, event.time.isoformat()
    )
    return PositionEvent.trusted(
        event_id=event_id,
        correlation_id=position.signal_id,
        causation_id=event.cause_id or cause,
        ts_event=event.time,
        ts_ingest=utc_now(),
        schema_version=PositionEvent.SCHEMA_VERSION,
        producer="positions",
        position_id=position.position_id,
        order_id=position.order_id,
        signal_id=position.signal_id,
        symbol=position.symbol,
        side=position.side,
        kind=event.kind,
        status=position.status if closing else "open",
        quantity=position.quantity,
        leverage=position.leverage,
        margin_mode=position.margin_mode,
        entry_price=position.entry_price,
        price=event.price,
        mark_price=event.mark_price,
        margin=position.margin,
        stop_loss_price=position.stop_loss_price,
        take_profit_price=position.take_profit_price,
        liquidation_price=position.liquidation_price,
        unrealized_pnl=m.unrealized_pnl if not closing else Decimal(0),
        unrealized_pnl_percent=m.unrealized_pnl_percent,
        roe=m.roe,
        maintenance_margin=m.maintenance_margin,
        margin_ratio=m.margin_ratio,
        distance_to_liquidation=m.distance_to_liquidation,
        risk_level=m.risk_level,
        entry_fee=position.entry_fee,
        exit_fee=position.exit_fee,
        funding_paid=position.funding_paid,
        funding_amount=event.funding_amount if event.kind == "funding" else None,
        funding_rate=event.funding_rate,
        realized_pnl=position.realized_pnl if closing else None,
        exit_price=position.exit_price if closing else None,
        close_reason=position.close_reason if closing else None,
        opened_at=position.opened_at,
        closed_at=position.closed_at if closing else None,
        auto_close_at=position.auto_close_at,
        equity=equity,
    )


def close_verdict(
    position: Position, *, verdict_id: str, producer: str, detail: str, trading_state: str, at: datetime
) -> RiskVerdict:
    """The approved verdict that closes `position` at market (reduce-only): what `p95 halt --flatten`
    and a live position's expiry send to the execution stage, which lets exactly these through a halt."""
    return RiskVerdict.model_validate(
        {
            **RiskVerdict.envelope(
                event_id=verdict_id,
                correlation_id=position.signal_id,
                causation_id=None,
                ts_event=at,
                producer=producer,
            ),
            "verdict_id": verdict_id,
            "signal_id": position.signal_id,
            "analysis_id": verdict_id,
            "symbol": position.symbol,
            "side": opposite(position.side),  # the side that closes it
            "decision": "APPROVED",
            "intent": "close",
            "close_position_id": position.position_id,
            "reasons": (),
            "details": (detail[:500],),
            "trading_state": trading_state,
            "signal_time": at,
            "price": position.last_price,
            "confidence": Decimal(1),
            "phoenix95_score": Decimal(1),
            "final_confidence": Decimal(1),
            "plan": None,
        }
    )
