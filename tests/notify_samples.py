"""Payloads and an HTTP stub for the notification tests (no network)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from requests.adapters import HTTPAdapter
from requests.models import Response

OPENED: dict[str, Any] = {
    "position_id": "5f0c7a4e-1d2b-5c3d-9e8f-0a1b2c3d4e5f",
    "order_id": "7a1b2c3d-0000-5000-8000-000000000001",
    "signal_id": "sig_2026_12_04_btc_1",
    "symbol": "BTCUSDT",
    "side": "long",
    "kind": "opened",
    "quantity": "0.015",
    "leverage": "20",
    "margin_mode": "ISOLATED",
    "entry_price": "43000.50",
    "price": "43000.50",
    "mark_price": "43000.50",
    "margin": "32.25",
    "stop_loss_price": "42140.49",
    "take_profit_price": "43860.51",
    "liquidation_price": "41065.98",
    "unrealized_pnl": "0",
    "roe": "0",
    "risk_level": "LOW",
    "margin_ratio": "1.2",
    "distance_to_liquidation": "4.5",
}
CLOSED: dict[str, Any] = {
    **OPENED,
    "kind": "closed",
    "status": "closed",
    "close_reason": "stop_loss",
    "exit_price": "42140.49",
    "realized_pnl": "-12.9003",
}
RISK: dict[str, Any] = {
    **OPENED,
    "kind": "tick",
    "risk_level": "CRITICAL",
    "mark_price": "41300",
    "distance_to_liquidation": "0.57",
    "margin_ratio": "87.5",
    "unrealized_pnl": "-25.51",
    "roe": "-79.1",
}
APPROVED: dict[str, Any] = {
    "verdict_id": "9c1d0000-0000-5000-8000-000000000002",
    "signal_id": "sig_2026_12_04_btc_1",
    "symbol": "BTCUSDT",
    "side": "long",
    "decision": "APPROVED",
    "price": "43000.5",
    "final_confidence": "0.8123",
    "reasons": [],
    "quantity": "0.015",
    "leverage": 20,
    "stop_loss_price": "42140.49",
    "take_profit_price": "43860.51",
    "liquidation_price": "41065.98",
}
REJECTED = {**APPROVED, "decision": "REJECTED", "reasons": ["MAX_OPEN_POSITIONS", "low_confidence"]}
ORDER_REJECTED: dict[str, Any] = {
    "order_id": "7a1b2c3d-0000-5000-8000-000000000003",
    "signal_id": "sig_2026_12_04_btc_2",
    "symbol": "ETHUSDT",
    "side": "short",
    "intent": "open",
    "status": "rejected",
    "quantity": "1.2",
    "requested_price": "2250.1",
    "reject_reason": "slippage_exceeded",
}
TRADING_STATE: dict[str, Any] = {
    "kind": "trading_state",
    "severity": "critical",
    "actor": "cli:alice",
    "subject": None,
    "state": "HALTED",
    "reason": "daily_loss_limit",
    "message": "Trading halted: the daily loss limit (-5%) was reached",
}
WORKER: dict[str, Any] = {
    "kind": "worker",
    "severity": "warning",
    "actor": "host:123",
    "subject": "positions",
    "state": "stopping",
    "message": "Worker positions on host (pid 123) is stopping (shutdown requested).",
}
HEALTH: dict[str, Any] = {
    "check": "heartbeat",
    "subject": "risk",
    "state": "missing",
    "message": "Worker risk stopped sending metrics: no heartbeat in Redis (it died or hangs).",
}
DEAD_LETTERS: dict[str, Any] = {
    "stage": "analysis",
    "reason": "SCHEMA_MISMATCH",
    "count": 12,
    "topics": ["p95.signals"],
    "window_s": 30,
    "example": "unknown schema id 77",
}


@contextmanager
def http_stub(answer: Callable[[Any], tuple[int, dict[str, str], bytes]] | None = None) -> Iterator[list[Any]]:
    """Every HTTP request `requests` would send is recorded and answered by `answer` (default 200 with
    a body each plugin accepts); nothing leaves the process."""
    sent: list[Any] = []
    original = HTTPAdapter.send

    def fake(adapter: Any, request: Any, *args: Any, **kwargs: Any) -> Response:
        sent.append(request)
        if answer is not None:
            status, headers, body = answer(request)
        else:
            status, headers = 200, {"Content-Type": "application/json"}
            body = b"ok" if "hooks.slack.com" in request.url else json.dumps({"ok": True, "result": {}}).encode()
        response = Response()
        response.status_code = status
        response._content = body
        response.headers.update(headers)
        response.request = request
        response.url = request.url
        return response

    HTTPAdapter.send = fake  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        HTTPAdapter.send = original  # type: ignore[method-assign]


def body_of(request: Any) -> dict[str, Any]:
    data = request.body
    return json.loads(data.decode() if isinstance(data, bytes) else data)
