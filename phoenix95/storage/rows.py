"""Facts -> PostgreSQL writes. Every write is an upsert keyed by an event id, so writing a batch twice
leaves one row per event. Parameters are always bound, never formatted into SQL."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from phoenix95.agents.ports import (
    DeadLettered,
    Fact,
    OrderPlaced,
    Outboxed,
    PositionChanged,
    PriceObserved,
    SignalAnalyzed,
    VerdictMade,
)
from phoenix95.storage.outbox import outbox_write
from phoenix95.storage.postgres import PgWrite, Statement, upsert

DEAD_LETTER = upsert(
    "dead_letter",
    "dead_letters",
    (
        "event_id",
        "correlation_id",
        "stage",
        "reason",
        "error",
        "source_topic",
        "source_partition",
        "source_offset",
        "source_timestamp",
        "original_key",
        "original_value",
        "original_headers",
        "dead_at",
    ),
    order=5,
)
SIGNAL = upsert(
    "signal",
    "signals",
    (
        "signal_id",
        "symbol",
        "action",
        "price",
        "confidence",
        "strategy",
        "timeframe",
        "rsi",
        "macd",
        "volume",
        "source",
        "source_timestamp",
        "received_at",
        "processed_at",
        "phoenix95_score",
        "final_confidence",
        "quality_score",
        "analysis_type",
        "raw_data",
        "analysis_data",
    ),
    constants={"validation_status": "'valid'", "analysis_status": "'completed'"},
    order=10,
)
VERDICT = upsert(
    "verdict",
    "risk_verdicts",
    (
        "verdict_id",
        "signal_id",
        "analysis_id",
        "symbol",
        "side",
        "decision",
        "intent",
        "close_position_id",
        "reasons",
        "details",
        "trading_state",
        "signal_time",
        "decided_at",
        "price",
        "confidence",
        "phoenix95_score",
        "final_confidence",
        "entry_price",
        "stop_loss_price",
        "take_profit_price",
        "liquidation_price",
        "quantity",
        "notional",
        "initial_margin",
        "maintenance_margin",
        "leverage",
        "margin_mode",
        "bracket",
        "maint_margin_ratio",
        "kelly",
        "kelly_fraction",
        "position_fraction",
        "win_probability",
        "payoff_ratio",
        "equity",
        "free_margin",
        "var_1d_95",
        "verdict",
    ),
    order=20,
)
ORDER = upsert(
    "order",
    "orders",
    (
        "order_id",
        "client_order_id",
        "verdict_id",
        "signal_id",
        "symbol",
        "side",
        "position_side",
        "intent",
        "close_position_id",
        "order_type",
        "quantity",
        "status",
        "reject_reason",
        "requested_price",
        "leverage",
        "margin_mode",
        "exchange",
        "exchange_order_id",
        "fill_price",
        "fill_quantity",
        "fill_notional",
        "fee",
        "slippage_rate",
        "reference_price",
        "filled_at",
        "price_event_id",
        "submitted_at",
        "order_data",
    ),
    order=30,
)
TRADE = upsert(
    "trade",
    "trades",
    (
        "trade_id",
        "signal_id",
        "order_id",
        "symbol",
        "side",
        "leverage",
        "margin_mode",
        "base_position_size",
        "actual_position_size",
        "quantity",
        "margin_required",
        "entry_price",
        "entry_price_requested",
        "stop_loss_price",
        "take_profit_price",
        "stop_loss_percent",
        "take_profit_percent",
        "liquidation_price",
        "trading_fee_percent",
        "trading_fee_amount",
        "exchange",
        "exchange_order_id",
        "slippage_tolerance",
        "actual_slippage",
        "var_estimate",
        "kelly_fraction",
        "order_submitted_at",
        "order_filled_at",
        "execution_context",
        "risk_metadata",
    ),
    constants={"order_type": "'market'", "status": "'filled'", "fill_status": "'filled'"},
    order=40,
)
SIGNAL_STATUS = Statement(
    "signal_status",
    """UPDATE signals SET execution_status = %s, execution_data = %s
       WHERE signal_id = %s AND execution_status IS DISTINCT FROM %s""",
    order=90,
)
_POSITION_UPDATES = (
    "current_price",
    "mark_price",
    "maintenance_margin",
    "margin_ratio",
    "unrealized_pnl",
    "unrealized_pnl_percent",
    "roe",
    "realized_pnl",
    "total_fees_paid",
    "funding_paid",
    "exit_price",
    "status",
    "close_reason",
    "last_monitored_at",
    "distance_to_liquidation",
    "risk_level",
    "max_drawdown",
    "max_profit",
    "forced_close_reason",
    "closed_at",
    "last_price_update",
)
POSITION = upsert(
    "position",
    "positions",
    (
        "position_id",
        "trade_id",
        "signal_id",
        "symbol",
        "side",
        "leverage",
        "margin_mode",
        "quantity",
        "base_size",
        "leveraged_size",
        "margin_used",
        "entry_price",
        "current_price",
        "mark_price",
        "stop_loss_price",
        "take_profit_price",
        "liquidation_price",
        "initial_margin",
        "maintenance_margin",
        "margin_ratio",
        "unrealized_pnl",
        "unrealized_pnl_percent",
        "roe",
        "realized_pnl",
        "total_fees_paid",
        "funding_paid",
        "exit_price",
        "status",
        "close_reason",
        "last_monitored_at",
        "distance_to_liquidation",
        "risk_level",
        "max_drawdown",
        "max_profit",
        "auto_close_at",
        "forced_close_reason",
        "opened_at",
        "closed_at",
        "last_price_update",
    ),
    constants={"exchange": "'paper'"},
    # Positions only move forward in event time, and a closed position never reopens.
    conflict="ON CONFLICT (position_id) DO UPDATE SET "
    + ", ".join(f"{column} = EXCLUDED.{column}" for column in _POSITION_UPDATES)
    + " WHERE positions.status = 'open' AND positions.last_price_update <= EXCLUDED.last_price_update",
    #: Several states of one position in a batch: one INSERT .. SELECT may touch a row only once, so
    #: the COPY path keeps the latest (closed wins over open at the same time).
    dedupe_key=0,
    dedupe_rank=lambda params: (params[38], params[27] != "open"),
    order=50,
)
TRADE_CLOSE = Statement(
    "trade_close",
    """UPDATE trades SET exit_price = %s, realized_pnl = %s, total_pnl = %s, unrealized_pnl = 0,
        position_closed_at = %s, close_reason = %s, roe_percent = %s, trading_fee_amount = %s,
        funding_fee_amount = %s
       WHERE trade_id = %s AND position_closed_at IS NULL""",
    order=60,
)


_JSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS


def _json_bytes(value: Any) -> bytes:
    """Compact JSON; what is not JSON (Decimal, datetime) as its str(), as json.dumps(default=str)."""
    return orjson.dumps(value, default=str, option=_JSON_OPTIONS)


def _dumps(value: Any) -> str:
    """JSON for a JSONB column, as text: psycopg sends a str with no type, so PostgreSQL parses it
    as the column's jsonb (cheaper than psycopg's Python-level Jsonb dumper on every row)."""
    return _json_bytes(value).decode()


def _raw_json(raw: str | None) -> str | None:
    """A signal's `raw` copy for its JSONB column: JSON text goes through as it is (no parse and
    re-dump); text that is not JSON (another producer's free-form payload) is kept, wrapped,
    instead of failing the row."""
    if not raw:
        return None
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _dumps({"text": raw})
    return raw


def writes_for(fact: Fact) -> list[PgWrite]:
    if isinstance(fact, SignalAnalyzed):
        return [_signal(fact)]
    if isinstance(fact, VerdictMade):
        return _verdict(fact)
    if isinstance(fact, OrderPlaced):
        return _order(fact)
    if isinstance(fact, PositionChanged):
        return _position(fact)
    if isinstance(fact, DeadLettered):
        return [_dead_letter(fact)]
    if isinstance(fact, PriceObserved):
        return []
    if isinstance(fact, Outboxed):
        return [outbox_write(fact)]
    raise TypeError(f"no PostgreSQL mapping for {type(fact).__name__}")


def _signal(fact: SignalAnalyzed) -> PgWrite:
    return PgWrite.of(SIGNAL, _signal_row, fact)


def _signal_row(fact: SignalAnalyzed) -> tuple[Any, ...]:
    s, a = fact.signal, fact.analysis
    analysis_data = {
        "event_id": a.event_id,
        "base_score": str(a.base_score),
        "adjustments": [
            {"code": adj.code, "delta": format(adj.delta, "f"), "detail": adj.detail} for adj in a.adjustments
        ],
    }
    return (
        s.signal_id,
        s.symbol,
        s.action,
        s.price,
        s.confidence,
        s.strategy,
        s.timeframe,
        s.rsi,
        s.macd,
        s.volume,
        s.source,
        s.source_timestamp,
        s.ts_ingest,
        a.ts_ingest,
        a.phoenix95_score,
        a.final_confidence,
        a.quality_score,
        a.analysis_type,
        _raw_json(s.raw),
        _dumps(analysis_data),
    )


def _verdict(fact: VerdictMade) -> list[PgWrite]:
    v = fact.verdict
    p = v.plan
    plan_values: tuple[Any, ...] = (
        (
            p.entry_price,
            p.stop_loss_price,
            p.take_profit_price,
            p.liquidation_price,
            p.quantity,
            p.notional,
            p.initial_margin,
            p.maintenance_margin,
            p.leverage,
            p.margin_mode,
            p.bracket,
            p.maint_margin_ratio,
            p.kelly,
            p.kelly_fraction,
            p.position_fraction,
            p.win_probability,
            p.payoff_ratio,
            p.equity,
            p.free_margin,
            p.var_1d_95,
        )
        if p is not None
        else (None,) * 20
    )
    writes = [
        PgWrite(
            VERDICT,
            (
                v.verdict_id,
                v.signal_id,
                v.analysis_id,
                v.symbol,
                v.side,
                v.decision,
                v.intent,
                v.close_position_id,
                list(v.reasons),
                list(v.details),
                v.trading_state,
                v.signal_time,
                v.ts_event,
                v.price,
                v.confidence,
                v.phoenix95_score,
                v.final_confidence,
                *plan_values,
                _dumps(v.model_dump(mode="json")),
            ),
        )
    ]
    if not v.approved:
        data = _dumps({"verdict_id": v.verdict_id, "reasons": list(v.reasons)})
        writes.append(PgWrite(SIGNAL_STATUS, ("rejected", data, v.signal_id, "rejected")))
    return writes


def _order(fact: OrderPlaced) -> list[PgWrite]:
    o, v = fact.order, fact.verdict
    f = o.fill
    writes = [
        PgWrite(
            ORDER,
            (
                o.order_id,
                o.client_order_id,
                o.verdict_id,
                o.signal_id,
                o.symbol,
                o.side,
                o.position_side,
                o.intent,
                o.close_position_id,
                o.order_type,
                o.quantity,
                o.status,
                o.reject_reason,
                o.requested_price,
                o.leverage,
                o.margin_mode,
                o.exchange,
                o.exchange_order_id,
                f.price if f else None,
                f.quantity if f else None,
                f.notional if f else None,
                f.fee if f else None,
                f.slippage_rate if f else None,
                f.reference_price if f else None,
                f.filled_at if f else None,
                f.price_event_id if f else None,
                o.ts_event,
                _dumps(o.model_dump(mode="json")),
            ),
        )
    ]
    status = "executed" if o.status == "filled" else "rejected"
    data = _dumps({"order_id": o.order_id, "status": o.status, "reject_reason": o.reject_reason})
    writes.append(PgWrite(SIGNAL_STATUS, (status, data, o.signal_id, status)))
    if f is not None and o.intent == "open":
        p = v.plan
        margin = f.notional / o.leverage
        writes.append(
            PgWrite(
                TRADE,
                (
                    o.order_id,
                    o.signal_id,
                    o.order_id,
                    o.symbol,
                    o.position_side,
                    o.leverage,
                    o.margin_mode,
                    margin,
                    f.notional,
                    f.quantity,
                    margin,
                    f.price,
                    o.requested_price,
                    p.stop_loss_price if p else None,
                    p.take_profit_price if p else None,
                    _pct_distance(p.entry_price, p.stop_loss_price) if p else None,
                    _pct_distance(p.entry_price, p.take_profit_price) if p else None,
                    p.liquidation_price if p else None,
                    (f.fee / f.notional).quantize(Decimal("0.00001")),
                    f.fee,
                    o.exchange,
                    o.exchange_order_id,
                    None,
                    f.slippage_rate,
                    p.var_1d_95 if p else None,
                    p.kelly_fraction if p else None,
                    o.ts_event,
                    f.filled_at,
                    _dumps({"client_order_id": o.client_order_id, "reference_price": str(f.reference_price)}),
                    _dumps({"verdict_id": v.verdict_id, "reasons": list(v.reasons)}),
                ),
            )
        )
    return writes


def _pct_distance(entry: Decimal, level: Decimal) -> Decimal:
    return (abs(entry - level) / entry).quantize(Decimal("0.0001"))


def _position(fact: PositionChanged) -> list[PgWrite]:
    e, pos = fact.event, fact.position
    fees = pos.entry_fee + pos.exit_fee
    writes = [
        PgWrite(
            POSITION,
            (
                pos.position_id,
                pos.order_id,
                pos.signal_id,
                pos.symbol,
                pos.side,
                pos.leverage,
                pos.margin_mode,
                pos.quantity,
                pos.margin,
                pos.notional,
                pos.margin,
                pos.entry_price,
                e.price,
                e.mark_price,
                pos.stop_loss_price,
                pos.take_profit_price,
                pos.liquidation_price,
                pos.margin,
                e.maintenance_margin,
                e.margin_ratio,
                e.unrealized_pnl if pos.is_open else 0,
                e.unrealized_pnl_percent,
                e.roe,
                pos.realized_pnl,
                fees,
                pos.funding_paid,
                pos.exit_price,
                pos.status,
                pos.close_reason,
                e.ts_event,
                e.distance_to_liquidation,
                e.risk_level,
                pos.min_roe,
                pos.max_roe,
                pos.auto_close_at,
                pos.close_reason if pos.close_reason in ("expiry", "liquidation") else None,
                pos.opened_at,
                pos.closed_at,
                pos.last_event_time,
            ),
        )
    ]
    if not pos.is_open:
        roe = pos.realized_pnl / pos.margin * 100 if pos.margin else None
        writes.append(
            PgWrite(
                TRADE_CLOSE,
                (
                    pos.exit_price,
                    pos.realized_pnl,
                    pos.realized_pnl,
                    pos.closed_at,
                    pos.close_reason,
                    roe,
                    fees,
                    pos.funding_paid,
                    pos.order_id,
                ),
            )
        )
    return writes


def _dead_letter(fact: DeadLettered) -> PgWrite:
    d = fact.dead_letter
    headers = [{"key": h.key, "value": h.value.hex() if h.value is not None else None} for h in d.original_headers]
    return PgWrite(
        DEAD_LETTER,
        (
            d.event_id,
            d.correlation_id,
            d.stage,
            d.reason,
            d.error,
            d.source_topic,
            d.source_partition,
            d.source_offset,
            d.source_timestamp,
            d.original_key,
            d.original_value,
            _dumps(headers),
            d.ts_event,
        ),
    )
