"""Turn loosely shaped signal payloads (JSON on the topic, webhooks, files, Python dicts) into a
validated `Signal`: field aliases, symbol and timeframe normalisation, timestamps, clear errors.

Alerts (the webhook) come in more shapes: `parse_alert` reads a JSON object, a JSON-looking text
(TradingView sends ``text/plain`` when a placeholder such as ``{{timenow}}`` left the JSON unquoted),
or ``key=value`` pairs; `build_alert_signal` also ignores the informational fields TradingView users
commonly add (``exchange``, ``contracts``, ...) and names a placeholder that was never replaced.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError

from phoenix95.schemas.envelope import utc_now
from phoenix95.schemas.messages import Signal

#: Alias -> contract field. The first alias present wins over later ones.
FIELD_ALIASES: dict[str, str] = {
    "ticker": "symbol",
    "pair": "symbol",
    "strategy.order.action": "action",
    "order_action": "action",
    "side": "action",
    "signal": "action",
    "close": "price",
    "strategy.order.price": "price",
    "entry": "price",
    "interval": "timeframe",
    "tf": "timeframe",
    "timenow": "source_timestamp",
    "time": "source_timestamp",
    "timestamp": "source_timestamp",
    "id": "signal_id",
}
_ACTION_ALIASES = {
    "enter_long": "long",
    "enter_short": "short",
    "open_long": "long",
    "open_short": "short",
    "bull": "long",
    "bear": "short",
    "bullish": "long",
    "bearish": "short",
}
#: Body fields that carry a webhook secret; never part of a signal, its `raw` copy or its digest.
SECRET_FIELDS = ("passphrase", "secret", "token", "key")
_TIMEFRAME_ALIASES = {
    "1": "1m",
    "5": "5m",
    "15": "15m",
    "60": "1h",
    "240": "4h",
    "d": "1d",
    "1d": "1d",
    "D": "1d",
    "1D": "1d",
    "1M": "1m",
    "5M": "5m",
    "15M": "15m",
    "1H": "1h",
    "4H": "4h",
    "1h": "1h",
    "4h": "4h",
    "1m": "1m",
    "5m": "5m",
    "15m": "15m",
}
_SYMBOL_SUFFIXES = (".P", ".PERP", "PERP")
#: Envelope fields a foreign producer may leave out; we fill them in.
_ENVELOPE = ("event_id", "correlation_id", "causation_id", "ts_event", "ts_ingest", "schema_version", "producer")
_CONTRACT_FIELDS = set(Signal.model_fields)


class InvalidSignal(ValueError):
    """The payload is not a valid signal. `errors` lists (field, message) pairs."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{name}: {message}" for name, message in errors))


def normalize_symbol(value: Any) -> Any:
    """`BINANCE:BTCUSDT.P` -> `BTCUSDT`, `btc/usdt` -> `BTCUSDT`."""
    if not isinstance(value, str):
        return value
    symbol = value.strip().upper()
    if ":" in symbol:
        symbol = symbol.rsplit(":", 1)[1]
    for suffix in _SYMBOL_SUFFIXES:
        if symbol.endswith(suffix) and len(symbol) > len(suffix) + 2:
            symbol = symbol[: -len(suffix)]
            break
    return re.sub(r"[/\-_ ]", "", symbol)


def normalize_timeframe(value: Any) -> Any:
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):
        return value
    stripped = value.strip()
    return _TIMEFRAME_ALIASES.get(stripped, _TIMEFRAME_ALIASES.get(stripped.lower(), stripped))


def parse_timestamp(value: Any) -> Any:
    """ISO-8601 (Z or offset; naive means UTC), epoch seconds or epoch milliseconds."""
    if value is None or isinstance(value, datetime):
        return value.astimezone(UTC) if isinstance(value, datetime) and value.tzinfo else value
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float | Decimal) or (
        isinstance(value, str) and re.fullmatch(r"\d{9,13}(\.\d+)?", value)
    ):
        number = Decimal(str(value))
        seconds = number / 1000 if number > 10**11 else number
        return datetime.fromtimestamp(float(seconds), tz=UTC)
    if isinstance(value, str):
        text = value.strip().replace("Z", "+00:00")
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return value
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    return value


def _number(value: Any) -> Any:
    if isinstance(value, float):
        return str(value)  # never let binary float artefacts into a Decimal
    if isinstance(value, str):
        text = value.strip()
        try:
            Decimal(text)
        except InvalidOperation:
            return value
        return text
    return value


def _flatten(payload: Mapping[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in payload.items():
        if key == "strategy" and isinstance(value, Mapping):
            order = value.get("order")
            if isinstance(order, Mapping):
                for name in ("action", "price"):
                    if name in order:
                        flat.setdefault(f"strategy.order.{name}", order[name])
            if "name" in value:
                flat["strategy"] = value["name"]
            continue
        flat[str(key)] = value
    return flat


def without_secrets(payload: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in payload.items() if key not in SECRET_FIELDS}


def normalize_fields(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Apply aliases and normalisation; unknown extra keys are kept (and rejected by validation)."""
    flat = _flatten(payload)
    fields: dict[str, Any] = {}
    for key, value in flat.items():
        target = FIELD_ALIASES.get(key, key)
        if target in fields and key != target:
            continue  # the canonical field, or an earlier alias, wins
        fields[target] = value
    for key in SECRET_FIELDS:
        fields.pop(key, None)
    if "symbol" in fields:
        fields["symbol"] = normalize_symbol(fields["symbol"])
    if isinstance(fields.get("action"), str):
        action = fields["action"].strip().lower()
        fields["action"] = _ACTION_ALIASES.get(action, action)
    if "timeframe" in fields:
        fields["timeframe"] = normalize_timeframe(fields["timeframe"])
    for key in ("price", "confidence", "rsi", "macd", "volume"):
        if key in fields:
            fields[key] = _number(fields[key])
    if "source_timestamp" in fields:
        fields["source_timestamp"] = parse_timestamp(fields["source_timestamp"])
    if isinstance(fields.get("source"), str):
        fields["source"] = fields["source"].strip().lower()
    return fields


RAW_MAX_CHARS = 65536


def raw_copy(payload: Mapping[str, Any]) -> str:
    """The payload as JSON text (secrets left out) for the signal's `raw` field: always valid JSON
    within the contract's 65,536 characters. A longer payload is kept as a JSON object holding the
    start of its text (cutting the text itself would leave invalid JSON)."""
    text = json.dumps(without_secrets(payload), default=str, sort_keys=True, ensure_ascii=False)
    if len(text) <= RAW_MAX_CHARS:
        return text
    head = text[: RAW_MAX_CHARS // 4]  # escaping can at most double it: well within the limit
    return json.dumps({"truncated": True, "chars": len(text), "head": head}, ensure_ascii=False)


def build_signal(
    payload: Mapping[str, Any],
    *,
    producer: str,
    signal_id: str,
    ts_ingest: datetime | None = None,
    default_source: str = "custom",
    keep_raw: bool = False,
) -> Signal:
    """Validate a payload into a Signal. `signal_id` is used when the payload has none."""
    fields = normalize_fields(payload)
    for key in _ENVELOPE:
        fields.pop(key, None)
    unknown = sorted(set(fields) - _CONTRACT_FIELDS)
    if unknown:
        raise InvalidSignal([(name, "unknown field") for name in unknown])
    fields.setdefault("signal_id", signal_id)
    if not isinstance(fields["signal_id"], str):
        fields["signal_id"] = str(fields["signal_id"])
    fields.setdefault("confidence", "0.8")
    fields.setdefault("source", default_source)
    ingest = ts_ingest or utc_now()
    source_time = fields.get("source_timestamp")
    event_time = source_time if isinstance(source_time, datetime) else ingest
    if keep_raw:
        fields["raw"] = raw_copy(payload)
    envelope = Signal.envelope(
        event_id=fields["signal_id"],
        correlation_id=fields["signal_id"],
        causation_id=None,
        ts_event=event_time,
        ts_ingest=ingest,
        producer=producer,
    )
    try:
        return Signal.model_validate({**envelope, **fields})
    except ValidationError as error:
        raise InvalidSignal(_errors(error)) from None


def _errors(error: ValidationError) -> list[tuple[str, str]]:
    found = []
    for item in error.errors(include_url=False):
        location = ".".join(str(part) for part in item.get("loc", ())) or "signal"
        found.append((location, item.get("msg", "invalid")))
    return found


# -- alerts: TradingView and other webhook senders ---------------------------------------------------

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
        for name, value in _flatten(payload).items()
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
    for key in _flatten(payload):
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
