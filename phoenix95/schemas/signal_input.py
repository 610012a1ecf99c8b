"""Turn loosely shaped signal payloads (JSON on the topic, webhooks, files, Python dicts) into a
validated `Signal`: field aliases, symbol and timeframe normalisation, timestamps, clear errors.

Alerts come in more shapes; reading them is the webhook's (`connectors/webhook/alerts.py`).
"""

from __future__ import annotations

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


def flatten(payload: Mapping[str, Any]) -> dict[str, Any]:
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
    flat = flatten(payload)
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
