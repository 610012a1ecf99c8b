"""What the hub notifies: event types, their severities and default modes, and the drafts the stage
turns pipeline events into (pure logic, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Severity = Literal["info", "warning", "critical"]
Mode = Literal["on", "silent", "off"]

SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}

POSITION_OPENED = "position_opened"
POSITION_CLOSED = "position_closed"
RISK_ESCALATION = "risk_escalation"
VERDICT_APPROVED = "verdict_approved"
VERDICT_REJECTED = "verdict_rejected"
ORDER_REJECTED = "order_rejected"
TRADING_STATE = "trading_state"
PROTECTION = "protection"
RECONCILIATION = "reconciliation"
EXCHANGE = "exchange"
WORKER = "worker"
HEALTH = "health"
DEAD_LETTERS = "dead_letters"
TEST = "test"

#: Every type with its default mode: opens, closes, risk escalation, state changes and health on;
#: approved verdicts silent (delivered without a sound where the channel can); rejections off.
DEFAULT_MODES: dict[str, Mode] = {
    POSITION_OPENED: "on",
    POSITION_CLOSED: "on",
    RISK_ESCALATION: "on",
    VERDICT_APPROVED: "silent",
    VERDICT_REJECTED: "off",
    ORDER_REJECTED: "off",
    TRADING_STATE: "on",
    PROTECTION: "on",
    RECONCILIATION: "on",
    EXCHANGE: "on",
    WORKER: "on",
    HEALTH: "on",
    DEAD_LETTERS: "on",
    TEST: "on",
}
EVENT_TYPES: tuple[str, ...] = tuple(DEFAULT_MODES)

#: ControlEvent.kind -> notification type.
CONTROL_TYPES: dict[str, str] = {
    "trading_state": TRADING_STATE,
    "protection": PROTECTION,
    "symbol_lock": PROTECTION,
    "reconciliation": RECONCILIATION,
    "exchange": EXCHANGE,
    "worker": WORKER,
    "health": HEALTH,
}

RISK_LEVELS: dict[str, int] = {"LOW": 0, "MEDIUM": 1, "HIGH": 2, "CRITICAL": 3}
CLOSING_KINDS = frozenset({"closed", "liquidated", "expired"})


@dataclass(frozen=True)
class Draft:
    """One event to notify, before routing: the stage writes one outbox row per channel it goes to."""

    event_id: str
    type: str
    severity: Severity
    #: What the templates render from (JSON-able: numbers as strings).
    payload: dict[str, Any]
    event_time: datetime | None = None
    position_id: str | None = None
    signal_id: str | None = None
    subject: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def escalation(previous: str | None, level: str) -> tuple[bool, str | None]:
    """Risk-level hysteresis. `previous` is the level last notified for the position (None: armed).

    Notify when the level rises to HIGH or CRITICAL above the last notified level; re-arm only when it
    falls two levels below it (HIGH -> LOW, CRITICAL -> MEDIUM), so a price hovering at a boundary
    notifies once. Returns (notify, the new remembered level)."""
    rank = RISK_LEVELS.get(level, 0)
    if previous is None:
        if rank >= RISK_LEVELS["HIGH"]:
            return True, level
        return False, None
    last = RISK_LEVELS.get(previous, 0)
    if rank > last:
        return True, level
    if rank <= last - 2:
        return False, None
    return False, previous


def close_severity(reason: str | None) -> Severity:
    if reason == "liquidation":
        return "critical"
    if reason == "stop_loss":
        return "warning"
    return "info"
