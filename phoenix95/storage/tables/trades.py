"""The `trades` table: one row per filled opening order, completed when its position closes."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TypedDict

from phoenix95.agents.ports import OrderPlaced
from phoenix95.domain.positions import Position
from phoenix95.storage.postgres import PgWrite, Statement
from phoenix95.storage.tables.common import dumps, row_params, table_upsert


class TradeRow(TypedDict):
    trade_id: str
    signal_id: str
    order_id: str
    symbol: str
    side: str
    leverage: int
    margin_mode: str
    base_position_size: Decimal
    actual_position_size: Decimal
    quantity: Decimal
    margin_required: Decimal
    entry_price: Decimal
    entry_price_requested: Decimal
    stop_loss_price: Decimal | None
    take_profit_price: Decimal | None
    stop_loss_percent: Decimal | None
    take_profit_percent: Decimal | None
    liquidation_price: Decimal | None
    trading_fee_percent: Decimal
    trading_fee_amount: Decimal
    exchange: str
    exchange_order_id: str | None
    slippage_tolerance: Decimal | None
    actual_slippage: Decimal
    var_estimate: Decimal | None
    kelly_fraction: Decimal | None
    order_submitted_at: datetime
    order_filled_at: datetime
    execution_context: str
    risk_metadata: str


TRADE = table_upsert(
    "trade",
    "trades",
    TradeRow,
    constants={"order_type": "'market'", "status": "'filled'", "fill_status": "'filled'"},
    order=40,
)

#: The trade of a position that closed (its id is the opening order's).
TRADE_CLOSE = Statement(
    "trade_close",
    """UPDATE trades SET exit_price = %(exit_price)s, realized_pnl = %(realized_pnl)s,
        total_pnl = %(realized_pnl)s, unrealized_pnl = 0, position_closed_at = %(closed_at)s,
        close_reason = %(close_reason)s, roe_percent = %(roe_percent)s,
        trading_fee_amount = %(fees)s, funding_fee_amount = %(funding_paid)s
       WHERE trade_id = %(trade_id)s AND position_closed_at IS NULL""",
    order=60,
)


def trade_row(fact: OrderPlaced) -> TradeRow:
    o, v = fact.order, fact.verdict
    f, p = o.fill, v.plan
    assert f is not None
    margin = f.notional / o.leverage
    return {
        "trade_id": o.order_id,
        "signal_id": o.signal_id,
        "order_id": o.order_id,
        "symbol": o.symbol,
        "side": o.position_side,
        "leverage": o.leverage,
        "margin_mode": o.margin_mode,
        "base_position_size": margin,
        "actual_position_size": f.notional,
        "quantity": f.quantity,
        "margin_required": margin,
        "entry_price": f.price,
        "entry_price_requested": o.requested_price,
        "stop_loss_price": p.stop_loss_price if p else None,
        "take_profit_price": p.take_profit_price if p else None,
        "stop_loss_percent": _pct_distance(p.entry_price, p.stop_loss_price) if p else None,
        "take_profit_percent": _pct_distance(p.entry_price, p.take_profit_price) if p else None,
        "liquidation_price": p.liquidation_price if p else None,
        "trading_fee_percent": (f.fee / f.notional).quantize(Decimal("0.00001")),
        "trading_fee_amount": f.fee,
        "exchange": o.exchange,
        "exchange_order_id": o.exchange_order_id,
        "slippage_tolerance": None,
        "actual_slippage": f.slippage_rate,
        "var_estimate": p.var_1d_95 if p else None,
        "kelly_fraction": p.kelly_fraction if p else None,
        "order_submitted_at": o.ts_event,
        "order_filled_at": f.filled_at,
        "execution_context": dumps({"client_order_id": o.client_order_id, "reference_price": str(f.reference_price)}),
        "risk_metadata": dumps({"verdict_id": v.verdict_id, "reasons": list(v.reasons)}),
    }


trade_params = row_params(TRADE, trade_row)


def trade_write(fact: OrderPlaced) -> PgWrite:
    return PgWrite(TRADE, trade_params(fact))


def trade_close_write(position: Position) -> PgWrite:
    """The closing figures of a closed position's trade."""
    roe = position.realized_pnl / position.margin * 100 if position.margin else None
    return PgWrite(
        TRADE_CLOSE,
        {
            "exit_price": position.exit_price,
            "realized_pnl": position.realized_pnl,
            "closed_at": position.closed_at,
            "close_reason": position.close_reason,
            "roe_percent": roe,
            "fees": position.entry_fee + position.exit_fee,
            "funding_paid": position.funding_paid,
            "trade_id": position.order_id,
        },
    )


def _pct_distance(entry: Decimal, level: Decimal) -> Decimal:
    return (abs(entry - level) / entry).quantize(Decimal("0.0001"))


__all__ = ["TRADE", "TRADE_CLOSE", "TradeRow", "trade_close_write", "trade_row", "trade_write"]
