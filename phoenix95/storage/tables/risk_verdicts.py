"""The `risk_verdicts` table: one row per verdict, with its sizing plan flattened into columns."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TypedDict

from phoenix95.agents.ports import VerdictMade
from phoenix95.storage.postgres import PgWrite
from phoenix95.storage.tables.common import dumps, row_params, table_upsert
from phoenix95.storage.tables.signals import status_write


class VerdictRow(TypedDict):
    verdict_id: str
    signal_id: str
    analysis_id: str
    symbol: str
    side: str
    decision: str
    intent: str
    close_position_id: str | None
    reasons: list[str]
    details: list[str]
    trading_state: str
    signal_time: datetime
    decided_at: datetime
    price: Decimal
    confidence: Decimal
    phoenix95_score: Decimal
    final_confidence: Decimal
    entry_price: Decimal | None
    stop_loss_price: Decimal | None
    take_profit_price: Decimal | None
    liquidation_price: Decimal | None
    quantity: Decimal | None
    notional: Decimal | None
    initial_margin: Decimal | None
    maintenance_margin: Decimal | None
    leverage: int | None
    margin_mode: str | None
    bracket: int | None
    maint_margin_ratio: Decimal | None
    kelly: Decimal | None
    kelly_fraction: Decimal | None
    position_fraction: Decimal | None
    win_probability: Decimal | None
    payoff_ratio: Decimal | None
    equity: Decimal | None
    free_margin: Decimal | None
    var_1d_95: Decimal | None
    verdict: str


VERDICT = table_upsert("verdict", "risk_verdicts", VerdictRow, order=20)


def verdict_row(fact: VerdictMade) -> VerdictRow:
    v = fact.verdict
    p = v.plan
    return {
        "verdict_id": v.verdict_id,
        "signal_id": v.signal_id,
        "analysis_id": v.analysis_id,
        "symbol": v.symbol,
        "side": v.side,
        "decision": v.decision,
        "intent": v.intent,
        "close_position_id": v.close_position_id,
        "reasons": list(v.reasons),
        "details": list(v.details),
        "trading_state": v.trading_state,
        "signal_time": v.signal_time,
        "decided_at": v.ts_event,
        "price": v.price,
        "confidence": v.confidence,
        "phoenix95_score": v.phoenix95_score,
        "final_confidence": v.final_confidence,
        "entry_price": p.entry_price if p else None,
        "stop_loss_price": p.stop_loss_price if p else None,
        "take_profit_price": p.take_profit_price if p else None,
        "liquidation_price": p.liquidation_price if p else None,
        "quantity": p.quantity if p else None,
        "notional": p.notional if p else None,
        "initial_margin": p.initial_margin if p else None,
        "maintenance_margin": p.maintenance_margin if p else None,
        "leverage": p.leverage if p else None,
        "margin_mode": p.margin_mode if p else None,
        "bracket": p.bracket if p else None,
        "maint_margin_ratio": p.maint_margin_ratio if p else None,
        "kelly": p.kelly if p else None,
        "kelly_fraction": p.kelly_fraction if p else None,
        "position_fraction": p.position_fraction if p else None,
        "win_probability": p.win_probability if p else None,
        "payoff_ratio": p.payoff_ratio if p else None,
        "equity": p.equity if p else None,
        "free_margin": p.free_margin if p else None,
        "var_1d_95": p.var_1d_95 if p else None,
        "verdict": dumps(v.model_dump(mode="json")),
    }


verdict_params = row_params(VERDICT, verdict_row)


def verdict_writes(fact: VerdictMade) -> list[PgWrite]:
    v = fact.verdict
    writes = [PgWrite(VERDICT, verdict_params(fact))]
    if not v.approved:
        writes.append(status_write(v.signal_id, "rejected", {"verdict_id": v.verdict_id, "reasons": list(v.reasons)}))
    return writes
