"""The audit entries of a stage's facts: every verdict, order, fill and close.

The sink adds them to the batch it writes anyway (`StoreSink`), so they are in the stage's own
transaction: an effect never exists without its entry. Each entry is keyed by the event id and the
action, so a re-delivered event writes no second entry. The entry time is the event's own time (a
re-delivery builds the same entry). Payloads hold the figures a reviewer needs, Decimals as text.
"""

from __future__ import annotations

from typing import Any

from phoenix95.agents.ports import Fact, OrderPlaced, PositionChanged, VerdictMade
from phoenix95.domain.audit import Entry
from phoenix95.storage.audit import audit_write
from phoenix95.storage.postgres import PgWrite

#: Position event kinds that end a position (a close, in the audit's words).
CLOSING_KINDS = frozenset({"closed", "liquidated", "expired"})


def audit_writes_for(stage: str, fact: Fact) -> list[PgWrite]:
    return [audit_write(entry) for entry in audit_entries_for(stage, fact)]


def audit_entries_for(stage: str, fact: Fact) -> list[Entry]:
    actor = stage if ":" in stage else f"stage:{stage}"  # a stage, or a person (`cli:<user>`)
    if isinstance(fact, VerdictMade):
        v = fact.verdict
        payload: dict[str, Any] = {
            "decision": v.decision,
            "reasons": list(v.reasons),
            "signal_id": v.signal_id,
            "symbol": v.symbol,
            "side": v.side,
            "intent": v.intent,
            "trading_state": v.trading_state,
            "price": v.price,
            "event_id": v.event_id,
        }
        if v.plan is not None:
            payload["quantity"] = v.plan.quantity
            payload["notional"] = v.plan.notional
            payload["leverage"] = v.plan.leverage
        return [Entry(f"verdict:{v.event_id}", actor, "verdict", v.verdict_id, payload, v.ts_event)]
    if isinstance(fact, OrderPlaced):
        o = fact.order
        entries = [
            Entry(
                f"order:{o.event_id}",
                actor,
                "order",
                o.order_id,
                {
                    "verdict_id": o.verdict_id,
                    "symbol": o.symbol,
                    "side": o.side,
                    "intent": o.intent,
                    "quantity": o.quantity,
                    "requested_price": o.requested_price,
                    "status": o.status,
                    "reject_reason": o.reject_reason,
                    "exchange": o.exchange,
                    "event_id": o.event_id,
                },
                o.ts_event,
            )
        ]
        if o.fill is not None:
            f = o.fill
            entries.append(
                Entry(
                    f"fill:{o.event_id}",
                    actor,
                    "fill",
                    o.order_id,
                    {
                        "symbol": o.symbol,
                        "side": o.side,
                        "price": f.price,
                        "quantity": f.quantity,
                        "notional": f.notional,
                        "fee": f.fee,
                        "filled_at": f.filled_at,
                        "event_id": o.event_id,
                    },
                    f.filled_at,
                )
            )
        return entries
    if isinstance(fact, PositionChanged) and fact.event.kind in CLOSING_KINDS:
        e = fact.event
        return [
            Entry(
                f"close:{e.event_id}",
                actor,
                "close",
                e.position_id,
                {
                    "kind": e.kind,
                    "symbol": e.symbol,
                    "side": e.side,
                    "quantity": e.quantity,
                    "entry_price": e.entry_price,
                    "exit_price": e.exit_price,
                    "realized_pnl": e.realized_pnl,
                    "close_reason": e.close_reason,
                    "event_id": e.event_id,
                },
                e.closed_at or e.ts_event,
            )
        ]
    return []
