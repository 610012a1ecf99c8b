"""Every notification's words, in one place: a title and a body per event type, one line per event for
digests, and splitting of what is too long for a channel (split on line boundaries, never cut).

Markdown (Telegram's v1 dialect, which Discord and Slack render too) where the channel renders it,
plain text otherwise. Ids go in code spans (Telegram's Markdown breaks on a bare `_`); free text is
escaped. Every message and every digest line names the position id where there is one, and the
signal id for `p95 tap --trace`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from phoenix95.notify import events as ev


class TemplateError(ValueError):
    """An event whose payload cannot be rendered (recorded on its row; never stops the stage)."""


@dataclass(frozen=True)
class Rendered:
    title: str
    body: str
    markdown: bool


_CLOSE_REASONS = {
    "stop_loss": "stop-loss",
    "take_profit": "take-profit",
    "expiry": "expiry",
    "liquidation": "LIQUIDATION",
    "reduce_signal": "manual (reduce signal)",
    "manual": "manual",
}

#: Digest headline nouns per type (singular, plural).
_NOUNS: dict[str, tuple[str, str]] = {
    ev.POSITION_OPENED: ("position opened", "positions opened"),
    ev.POSITION_CLOSED: ("position closed", "positions closed"),
    ev.RISK_ESCALATION: ("risk escalation", "risk escalations"),
    ev.VERDICT_APPROVED: ("signal approved", "signals approved"),
    ev.VERDICT_REJECTED: ("signal rejected", "signals rejected"),
    ev.ORDER_REJECTED: ("order rejected", "orders rejected"),
    ev.TRADING_STATE: ("trading-state change", "trading-state changes"),
    ev.PROTECTION: ("protection event", "protection events"),
    ev.RECONCILIATION: ("reconciliation event", "reconciliation events"),
    ev.EXCHANGE: ("exchange event", "exchange events"),
    ev.WORKER: ("worker event", "worker events"),
    ev.HEALTH: ("health event", "health events"),
    ev.DEAD_LETTERS: ("dead-letter summary", "dead-letter summaries"),
    ev.TEST: ("test message", "test messages"),
}


def num(value: Any, places: int | None = None) -> str:
    """A decimal as a trader reads it: no exponent, no trailing zeros (or `places` decimals)."""
    if value is None or value == "":
        return "-"
    try:
        d = Decimal(str(value))
    except InvalidOperation as error:
        raise TemplateError(f"not a number: {value!r}") from error
    if places is not None:
        return f"{d:,.{places}f}"
    text = format(d.normalize(), "f")
    return text


def signed(value: Any, places: int = 2) -> str:
    text = num(value, places)
    return text if text.startswith("-") or text == "-" else "+" + text


def escape(text: str, markdown: bool) -> str:
    if not markdown:
        return text
    for char in ("\\", "_", "*", "`", "["):
        text = text.replace(char, "\\" + char)
    return text


def code(text: Any, markdown: bool) -> str:
    value = str(text).replace("`", "'")
    return f"`{value}`" if markdown else value


def bold(text: str, markdown: bool) -> str:
    return f"**{text}**" if markdown else text


def _side(payload: dict[str, Any]) -> str:
    return str(payload.get("side") or "").upper()


def _need(payload: dict[str, Any], *keys: str) -> None:
    missing = [k for k in keys if payload.get(k) in (None, "")]
    if missing:
        raise TemplateError(f"missing {', '.join(missing)}")


def _close_roe(payload: dict[str, Any]) -> str:
    try:
        margin = Decimal(str(payload.get("margin") or 0))
        pnl = Decimal(str(payload.get("realized_pnl") or 0))
    except InvalidOperation as error:
        raise TemplateError(str(error)) from error
    if margin <= 0:
        return "-"
    return signed(pnl / margin * 100) + "%"


def render(kind: str, payload: dict[str, Any], *, markdown: bool) -> Rendered:
    """Title and body of one event."""
    renderer = _RENDERERS.get(kind)
    if renderer is None:
        raise TemplateError(f"no template for event type {kind!r}")
    try:
        title, lines = renderer(payload, markdown)
    except TemplateError:
        raise
    except Exception as error:
        raise TemplateError(f"{type(error).__name__}: {error}") from error
    return Rendered(title, "\n".join(lines), markdown)


def _position_lines(p: dict[str, Any], md: bool) -> list[str]:
    return [
        f"{bold('Position', md)} {code(p['position_id'], md)}",
        f"Side {_side(p)} · qty {num(p['quantity'])} · {p.get('leverage', '-')}x {p.get('margin_mode', '')}".rstrip(),
        f"Entry {num(p['entry_price'])} · stop {num(p.get('stop_loss_price'))} · target {num(p.get('take_profit_price'))}",
        f"Liquidation {num(p.get('liquidation_price'))}",
    ]


def _trace_line(p: dict[str, Any], md: bool) -> str:
    return f"Signal {code(p.get('signal_id', '-'), md)} (p95 tap --trace {code(p.get('signal_id', '-'), md)})"


def _opened(p: dict[str, Any], md: bool) -> tuple[str, list[str]]:
    _need(p, "position_id", "symbol", "side", "quantity", "entry_price")
    title = f"Opened {_side(p)} {p['symbol']} @ {num(p['entry_price'])}"
    return title, [*_position_lines(p, md), _trace_line(p, md)]


def _closed(p: dict[str, Any], md: bool) -> tuple[str, list[str]]:
    _need(p, "position_id", "symbol", "side", "quantity", "entry_price")
    reason = _CLOSE_REASONS.get(str(p.get("close_reason")), str(p.get("close_reason") or p.get("kind")))
    title = f"Closed {_side(p)} {p['symbol']} ({reason}): PnL {signed(p.get('realized_pnl'))} USDT"
    lines = _position_lines(p, md)
    lines.insert(1, f"Reason {bold(reason, md)} · exit {num(p.get('exit_price') or p.get('price'))}")
    lines.append(f"PnL {signed(p.get('realized_pnl'))} USDT · ROE {_close_roe(p)}")
    lines.append(_trace_line(p, md))
    return title, lines


def _risk(p: dict[str, Any], md: bool) -> tuple[str, list[str]]:
    _need(p, "position_id", "symbol", "risk_level")
    title = f"Risk {p['risk_level']}: {_side(p)} {p['symbol']} near liquidation"
    lines = _position_lines(p, md)
    lines.insert(
        1,
        f"Mark {num(p.get('mark_price'))} · {num(p.get('distance_to_liquidation'), 2)}% to liquidation · "
        f"margin ratio {num(p.get('margin_ratio'), 2)}%",
    )
    lines.append(f"Unrealized PnL {signed(p.get('unrealized_pnl'))} USDT · ROE {signed(p.get('roe'))}%")
    lines.append(_trace_line(p, md))
    return title, lines


def _verdict(p: dict[str, Any], md: bool) -> tuple[str, list[str]]:
    _need(p, "symbol", "decision", "signal_id")
    title = f"Signal {p['decision'].lower()}: {_side(p)} {p['symbol']} @ {num(p.get('price'))}"
    lines = [f"Verdict {code(p.get('verdict_id', '-'), md)} · confidence {num(p.get('final_confidence'), 3)}"]
    if p.get("quantity"):
        lines.append(
            f"Plan: qty {num(p['quantity'])} · {p.get('leverage', '-')}x · stop {num(p.get('stop_loss_price'))} · "
            f"target {num(p.get('take_profit_price'))} · liquidation {num(p.get('liquidation_price'))}"
        )
    if p.get("reasons"):
        lines.append("Reasons: " + escape(", ".join(p["reasons"]), md))
    lines.append(_trace_line(p, md))
    return title, lines


def _order(p: dict[str, Any], md: bool) -> tuple[str, list[str]]:
    _need(p, "symbol", "order_id")
    title = f"Order {p.get('status', 'rejected')}: {_side(p)} {p['symbol']} ({p.get('intent', 'open')})"
    lines = [
        f"Order {code(p['order_id'], md)} · qty {num(p.get('quantity'))} @ {num(p.get('requested_price'))}",
        "Reason: " + escape(str(p.get("reject_reason") or "-"), md),
    ]
    if p.get("close_position_id"):
        lines.insert(0, f"{bold('Position', md)} {code(p['close_position_id'], md)}")
    lines.append(_trace_line(p, md))
    return title, lines


def _control(p: dict[str, Any], md: bool) -> tuple[str, list[str]]:
    _need(p, "kind", "message")
    state = f" -> {p['state']}" if p.get("state") else ""
    subject = f" {p['subject']}" if p.get("subject") else ""
    title = f"{p['kind'].replace('_', ' ').capitalize()}{subject}{state}"
    lines = [
        escape(str(p["message"]), md),
        f"By {code(p.get('actor', '-'), md)} · severity {p.get('severity', 'info')}",
    ]
    if p.get("reason"):
        lines.append("Reason: " + escape(str(p["reason"]), md))
    return title, lines


def _health(p: dict[str, Any], md: bool) -> tuple[str, list[str]]:
    _need(p, "check", "subject", "state", "message")
    title = f"Pipeline {p['check']}: {p['subject']} {p['state']}"
    return title, [escape(str(p["message"]), md)]


def _dead_letters(p: dict[str, Any], md: bool) -> tuple[str, list[str]]:
    _need(p, "stage", "reason", "count")
    title = f"{p['count']} dead letter{'s' if int(p['count']) != 1 else ''} from {p['stage']}: {p['reason']}"
    lines = [
        f"{p['count']} message{'s' if int(p['count']) != 1 else ''} of {escape(', '.join(p.get('topics', [])), md)} "
        f"in {num(p.get('window_s'), 0)} s were set aside ({code(p['reason'], md)})",
    ]
    if p.get("example"):
        lines.append("First: " + escape(str(p["example"]), md))
    lines.append(f"Inspect: {code('p95 dlq list', md)}")
    return title, lines


def _test(p: dict[str, Any], md: bool) -> tuple[str, list[str]]:
    return "Phoenix95 test notification", [escape(str(p.get("message", "If you read this, the channel works.")), md)]


_RENDERERS: dict[str, Any] = {
    ev.POSITION_OPENED: _opened,
    ev.POSITION_CLOSED: _closed,
    ev.RISK_ESCALATION: _risk,
    ev.VERDICT_APPROVED: _verdict,
    ev.VERDICT_REJECTED: _verdict,
    ev.ORDER_REJECTED: _order,
    ev.TRADING_STATE: _control,
    ev.PROTECTION: _control,
    ev.RECONCILIATION: _control,
    ev.EXCHANGE: _control,
    ev.WORKER: _control,
    ev.HEALTH: _health,
    ev.DEAD_LETTERS: _dead_letters,
    ev.TEST: _test,
}


def digest_line(kind: str, payload: dict[str, Any], *, markdown: bool) -> str:
    """One event as one line of a digest (names the position id where there is one)."""
    p = payload
    if kind == ev.POSITION_OPENED:
        _need(p, "position_id", "symbol")
        return (
            f"opened {_side(p)} {p['symbol']} qty {num(p['quantity'])} @ {num(p['entry_price'])} "
            f"· position {code(p['position_id'], markdown)}"
        )
    if kind == ev.POSITION_CLOSED:
        _need(p, "position_id", "symbol")
        reason = _CLOSE_REASONS.get(str(p.get("close_reason")), str(p.get("close_reason") or p.get("kind")))
        return (
            f"closed {_side(p)} {p['symbol']} ({reason}) PnL {signed(p.get('realized_pnl'))} "
            f"ROE {_close_roe(p)} · position {code(p['position_id'], markdown)}"
        )
    if kind == ev.RISK_ESCALATION:
        _need(p, "position_id", "risk_level")
        return f"risk {p['risk_level']} {_side(p)} {p['symbol']} · position {code(p['position_id'], markdown)}"
    rendered = render(kind, payload, markdown=markdown)
    if p.get("position_id"):
        return f"{escape(rendered.title, markdown)} · position {code(p['position_id'], markdown)}"
    return escape(rendered.title, markdown)


def headline(kinds: Sequence[str], window_s: float) -> str:
    """ "12 positions closed, 3 positions opened in the last minute"."""
    counts = Counter(kinds)
    parts = []
    for kind, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        singular, plural = _NOUNS.get(kind, (kind, kind))
        parts.append(f"{count} {singular if count == 1 else plural}")
    return f"{', '.join(parts)} {_window(window_s)}"


def _window(seconds: float) -> str:
    if seconds <= 1.5:
        return "just now"
    if 50 <= seconds <= 70:
        return "in the last minute"
    if seconds < 120:
        return f"in the last {seconds:.0f} s"
    return f"in the last {seconds / 60:.0f} min"


def digest(lines: Sequence[str], kinds: Sequence[str], *, markdown: bool, window_s: float) -> Rendered:
    return Rendered(headline(kinds, window_s), "\n".join(f"• {line}" for line in lines), markdown)


def split(rendered: Rendered, limit: int, *, title_in_body: bool) -> list[Rendered]:
    """Parts of at most `limit` characters each (title included when the channel puts it in the body),
    split on line boundaries; a single over-long line is split inside. Nothing is cut off."""
    overhead = (len(rendered.title) + 16) if title_in_body else 0
    room = max(64, limit - overhead)
    if len(rendered.body) <= room:
        return [rendered]
    chunks: list[str] = []
    current = ""
    for line in rendered.body.split("\n"):
        while len(line) > room:
            if current:
                chunks.append(current)
                current = ""
            chunks.append(line[:room])
            line = line[room:]
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > room:
            chunks.append(current)
            current = line
        else:
            current = candidate
    if current:
        chunks.append(current)
    total = len(chunks)
    return [Rendered(f"{rendered.title} ({i}/{total})", chunk, rendered.markdown) for i, chunk in enumerate(chunks, 1)]


def split_lines(lines: Sequence[str], limit: int, *, header: int) -> list[list[int]]:
    """Indices of `lines` grouped so each group's text ("• line" per line) fits `limit - header`."""
    room = max(64, limit - header)
    groups: list[list[int]] = []
    current: list[int] = []
    size = 0
    for index, line in enumerate(lines):
        length = len(line) + 3
        if current and size + length > room:
            groups.append(current)
            current, size = [], 0
        current.append(index)
        size += length
    if current:
        groups.append(current)
    return groups
