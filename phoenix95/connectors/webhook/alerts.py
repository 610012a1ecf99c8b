"""Alerts as TradingView and other webhook senders write them.

`parse_alert` reads a JSON object, a JSON-looking text (TradingView sends ``text/plain`` when a
placeholder such as ``{{timenow}}`` left the JSON unquoted), or ``key=value`` pairs;
`build_alert_signal` validates like `schemas.signal_input.build_signal`, but also ignores the
informational fields TradingView users commonly add (``exchange``, ``contracts``, ...) and names a
placeholder that was never replaced. `alert_secret` finds the secret in a body, `alert_digest`
fingerprints an alert for duplicate detection.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from phoenix95.schemas.messages import Signal
from phoenix95.schemas.signal_input import (
    FIELD_ALIASES,
    SECRET_FIELDS,
    InvalidSignal,
    build_signal,
    flatten,
    normalize_fields,
    raw_copy,
    without_secrets,
)

#: Informational fields TradingView users commonly put in alert messages. They are not part of the
#: contract: `build_alert_signal` leaves them out of the signal (they stay in its `raw` copy).
ALERT_EXTRA_FIELDS = frozenset(
    {
        "exchange",
        "open",
        "high",
        "low",
        "contracts",
        "position_size",
        "market_position",
        "market_position_size",
        "prev_market_position",
        "prev_market_position_size",
        "order_id",
        "order_contracts",
        "comment",
        "alert_message",
        "message",
        "currency",
        "base_currency",
        "syminfo",
        "quantity",
        "qty",
    }
)
_PLACEHOLDER = re.compile(r"\{\{\s*[\w.]+\s*\}\}")
_BAREWORD_END = ",}\n\r"
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_KEY = re.compile(r"[A-Za-z_][\w.\-]*")
_PAIR = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*[=:]\s*(.*?)\s*$", re.DOTALL)
#: A separator between pairs: a new line, comma, semicolon or ampersand followed by the next key.
_PAIR_SEPARATOR = re.compile(r"[\n\r;&,]+(?=\s*[A-Za-z_][\w.\-]*\s*[=:])")


class UnreadableAlert(InvalidSignal):
    """The body is not an alert in any format we read (answered with 400, not 422)."""


def parse_alert(body: bytes | str, content_type: str | None = None) -> dict[str, Any]:
    """Read an alert body: a JSON object, a JSON-looking text, or ``key=value`` pairs.

    Numbers keep their exact decimal text. ``key=value`` pairs are separated by new lines, commas,
    semicolons or ``&`` (``key: value`` works too); their keys are lower-cased.
    """
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise UnreadableAlert([("body", f"not UTF-8 text ({error.reason} at byte {error.start})")]) from None
    else:
        text = body
    text = text.strip()
    if not text:
        raise UnreadableAlert([("body", "empty")])
    if text[0] == "[":
        raise UnreadableAlert([("body", "an alert is one JSON object, not an array")])
    if text[0] == "{":  # whatever the content type says (curl -d sends JSON as a form)
        return _json_object(text)
    if content_type and content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
        from urllib.parse import parse_qsl

        return {key.strip().lower(): value for key, value in parse_qsl(text, keep_blank_values=True)}
    return _pairs(text)


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text, parse_float=Decimal)
    except ValueError as error:
        strict_error = error
    else:
        if not isinstance(value, dict):  # pragma: no cover - text starts with "{"
            raise UnreadableAlert([("body", "an alert is one JSON object")])
        return value
    try:
        return _LooseObject(text).parse()
    except ValueError:
        message = str(strict_error)
        raise UnreadableAlert([("body", f"invalid JSON: {message}")]) from None


def _pairs(text: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for number, part in enumerate(_PAIR_SEPARATOR.split(text), start=1):
        match = _PAIR.match(part.rstrip(",;&"))
        if match is None:
            raise UnreadableAlert(
                [("body", f"not JSON and not key=value pairs (part {number}: {part.strip()[:40]!r})")]
            )
        key, value = match.group(1).lower(), match.group(2)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        fields[key] = value
    return fields


class _LooseObject:
    """A forgiving reader for JSON-looking text: unquoted values (``"time": 2024-01-01T00:00:00Z``),
    single quotes, ``=`` for ``:``, missing commas between lines, trailing commas."""

    def __init__(self, text: str):
        self.text = text
        self.at = 0

    def parse(self) -> dict[str, Any]:
        value = self._object()
        self._space()
        if self.at != len(self.text):
            raise ValueError(f"unexpected text at {self.at}")
        return value

    def _space(self) -> None:
        while self.at < len(self.text) and self.text[self.at].isspace():
            self.at += 1

    def _peek(self) -> str:
        self._space()
        return self.text[self.at] if self.at < len(self.text) else ""

    def _object(self) -> dict[str, Any]:
        if self._peek() != "{":
            raise ValueError("expected {")
        self.at += 1
        found: dict[str, Any] = {}
        while True:
            char = self._peek()
            if char == "}":
                self.at += 1
                return found
            if char == ",":
                self.at += 1
                continue
            if not char:
                raise ValueError("unterminated object")
            key = self._string() if char in "\"'" else self._word()
            if self._peek() not in (":", "="):
                raise ValueError(f"expected : after {key!r}")
            self.at += 1
            found[key] = self._value()

    def _value(self) -> Any:
        char = self._peek()
        if not char:
            raise ValueError("missing value at the end")
        if char == "{" and not self.text.startswith("{{", self.at):
            return self._object()
        if char in "\"'":
            return self._string()
        start = self.at
        while self.at < len(self.text) and self.text[self.at] not in _BAREWORD_END:
            if self.text.startswith("{{", self.at):
                end = self.text.find("}}", self.at)
                self.at = len(self.text) if end < 0 else end + 2
            else:
                self.at += 1
        word = self.text[start : self.at].strip()
        if not word:
            raise ValueError(f"missing value at {start}")
        return {"true": True, "false": False, "null": None}.get(word, word)

    def _string(self) -> str:
        quote = self.text[self.at]
        if quote == '"':
            match = _JSON_STRING.match(self.text, self.at)
            if match is None:
                raise ValueError("unterminated string")
            self.at = match.end()
            return str(json.loads(match.group(0)))
        end = self.text.find("'", self.at + 1)
        if end < 0:
            raise ValueError("unterminated string")
        value = self.text[self.at + 1 : end]
        self.at = end + 1
        return value

    def _word(self) -> str:
        match = _KEY.match(self.text, self.at)
        if match is None:
            raise ValueError(f"expected a key at {self.at}")
        self.at = match.end()
        return match.group(0)


def alert_secret(payload: Mapping[str, Any]) -> str | None:
    """The secret an alert carries in its body (`passphrase`, `secret`, `token` or `key`)."""
    for name in SECRET_FIELDS:
        value = payload.get(name)
        if value is not None:
            return str(value)
    return None


def build_alert_signal(
    payload: Mapping[str, Any],
    *,
    producer: str,
    signal_id: str,
    source: str,
    ts_ingest: datetime | None = None,
) -> Signal:
    """Validate an alert: like `build_signal`, but the informational fields TradingView users add are
    ignored, a placeholder left unreplaced is named, and `raw` keeps the alert (without secrets)."""
    unreplaced = [
        (str(name), f"TradingView placeholder {value.strip()} was not replaced; check the alert message")
        for name, value in flatten(payload).items()
        if isinstance(value, str) and _PLACEHOLDER.search(value)
    ]
    if unreplaced:
        raise InvalidSignal(unreplaced)
    kept = {key: value for key, value in payload.items() if not _is_extra(str(key))}
    try:
        signal = build_signal(kept, producer=producer, signal_id=signal_id, ts_ingest=ts_ingest, default_source=source)
    except InvalidSignal as error:
        sent_as = _sent_as(kept)
        raise InvalidSignal([(sent_as.get(name, name), message) for name, message in error.errors]) from None
    return signal.model_copy(update={"raw": raw_copy(payload)})


def _sent_as(payload: Mapping[str, Any]) -> dict[str, str]:
    """Contract field -> the key the sender used for it (``price`` -> ``close``), so that an error
    names the field as it appears in the alert message."""
    sent_as: dict[str, str] = {}
    for key in flatten(payload):
        target = FIELD_ALIASES.get(key, key)
        if target not in sent_as or key == target:
            sent_as[target] = key
    return sent_as


def _is_extra(key: str) -> bool:
    return key in ALERT_EXTRA_FIELDS or key.startswith(("plot_", "plot.", "syminfo.", "strategy.position"))


def alert_digest(payload: Mapping[str, Any], *, scope: str = "") -> str:
    """SHA-256 of the alert's normalised content (secrets left out): the same alert sent as JSON or as
    text, with keys in any order, has the same digest."""

    fields = normalize_fields(without_secrets(payload))
    canonical = json.dumps(fields, default=str, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{scope}\n{canonical}".encode()).hexdigest()
