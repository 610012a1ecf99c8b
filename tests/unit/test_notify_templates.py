"""Notification templates: every type renders its numbers and ids, digests name each position,
and what is too long for a channel is split on line boundaries, never cut."""

from __future__ import annotations

import pytest

from phoenix95.notify import events as ev
from phoenix95.notify import templates
from tests import notify_samples as s

POSITION_ID = s.OPENED["position_id"]


@pytest.mark.parametrize("markdown", [True, False])
def test_position_messages_carry_the_numbers_a_trader_acts_on(markdown: bool) -> None:
    opened = templates.render(ev.POSITION_OPENED, s.OPENED, markdown=markdown)
    assert opened.title == "Opened LONG BTCUSDT @ 43000.5"
    for text in ("0.015", "43000.5", "42140.49", "43860.51", "41065.98", POSITION_ID, s.OPENED["signal_id"]):
        assert text in opened.body
    closed = templates.render(ev.POSITION_CLOSED, s.CLOSED, markdown=markdown)
    assert closed.title == "Closed LONG BTCUSDT (stop-loss): PnL -12.90 USDT"
    assert "ROE -40.00%" in closed.body  # realized PnL / margin
    assert "p95 tap --trace" in closed.body and POSITION_ID in closed.body
    risk = templates.render(ev.RISK_ESCALATION, s.RISK, markdown=markdown)
    assert risk.title.startswith("Risk CRITICAL") and "0.57% to liquidation" in risk.body


def test_markdown_only_where_the_channel_renders_it() -> None:
    md = templates.render(ev.POSITION_OPENED, s.OPENED, markdown=True)
    plain = templates.render(ev.POSITION_OPENED, s.OPENED, markdown=False)
    assert f"`{POSITION_ID}`" in md.body and "**Position**" in md.body
    assert "`" not in plain.body and "*" not in plain.body
    control = templates.render(ev.TRADING_STATE, s.TRADING_STATE, markdown=True)
    assert "daily\\_loss\\_limit" in control.body  # free text escaped for Markdown


@pytest.mark.parametrize(
    ("kind", "payload", "expected"),
    [
        (ev.VERDICT_APPROVED, s.APPROVED, "Signal approved: LONG BTCUSDT @ 43000.5"),
        (ev.VERDICT_REJECTED, s.REJECTED, "Signal rejected: LONG BTCUSDT @ 43000.5"),
        (ev.ORDER_REJECTED, s.ORDER_REJECTED, "Order rejected: SHORT ETHUSDT (open)"),
        (ev.TRADING_STATE, s.TRADING_STATE, "Trading state -> HALTED"),
        (ev.WORKER, s.WORKER, "Worker positions -> stopping"),
        (ev.HEALTH, s.HEALTH, "Pipeline heartbeat: risk missing"),
        (ev.DEAD_LETTERS, s.DEAD_LETTERS, "12 dead letters from analysis: SCHEMA_MISMATCH"),
    ],
)
def test_every_other_type_has_a_title(kind: str, payload: dict, expected: str) -> None:
    assert templates.render(kind, payload, markdown=False).title == expected


def test_a_payload_missing_its_numbers_is_a_template_error() -> None:
    with pytest.raises(templates.TemplateError, match="missing entry_price"):
        templates.render(ev.POSITION_OPENED, {**s.OPENED, "entry_price": None}, markdown=True)
    with pytest.raises(templates.TemplateError, match="not a number"):
        templates.render(ev.POSITION_CLOSED, {**s.CLOSED, "realized_pnl": "n/a"}, markdown=True)
    with pytest.raises(templates.TemplateError, match="no template"):
        templates.render("nonsense", {}, markdown=True)


def test_digest_lines_name_each_position_and_the_headline_counts_them() -> None:
    payloads = [{**s.CLOSED, "position_id": f"pos-{i}"} for i in range(12)]
    lines = [templates.digest_line(ev.POSITION_CLOSED, p, markdown=False) for p in payloads]
    digest = templates.digest(lines, [ev.POSITION_CLOSED] * 12, markdown=False, window_s=60)
    assert digest.title == "12 positions closed in the last minute"
    for i in range(12):
        assert f"position pos-{i}" in digest.body
    mixed = templates.headline([ev.POSITION_CLOSED] * 3 + [ev.POSITION_OPENED], 30)
    assert mixed == "3 positions closed, 1 position opened in the last 30 s"


def test_a_long_message_is_split_for_telegram_never_cut() -> None:
    lines = [f"line {i:04d} " + "x" * 90 for i in range(200)]  # ~20 kB
    rendered = templates.Rendered("Digest", "\n".join(lines), True)
    parts = templates.split(rendered, 4096, title_in_body=True)
    assert len(parts) >= 5
    for part in parts:
        assert len(part.title) + 2 + len(part.body) <= 4096
    assert "\n".join(p.body for p in parts) == rendered.body
    assert parts[0].title == f"Digest (1/{len(parts)})"
    one_huge_line = templates.Rendered("T", "y" * 10_000, False)
    pieces = templates.split(one_huge_line, 4096, title_in_body=False)
    assert "".join(p.body for p in pieces) == one_huge_line.body and all(len(p.body) <= 4096 for p in pieces)


def test_risk_escalation_has_hysteresis() -> None:
    levels = [
        "LOW",
        "MEDIUM",
        "HIGH",
        "MEDIUM",
        "HIGH",
        "MEDIUM",
        "HIGH",
        "CRITICAL",
        "HIGH",
        "CRITICAL",
        "LOW",
        "HIGH",
    ]
    remembered = None
    notified = []
    for level in levels:
        notify, remembered = ev.escalation(remembered, level)
        if notify:
            notified.append(level)
    # HIGH once while hovering HIGH/MEDIUM, CRITICAL once while hovering CRITICAL/HIGH, HIGH again after LOW
    assert notified == ["HIGH", "CRITICAL", "HIGH"]
