"""Which messages to show: `--key`, `--symbol`, `--signal`, `--header` and `--where`, all of which
must match (a repeated option matches any of its values).

Checks that need only the key and headers run before decoding, so a filtered tap decodes little:
`--signal` reads the `p95-correlation-id` header every Phoenix95 message carries and decodes only
messages without it (JSON written by other tools).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from phoenix95.tap.decode import JSON_SCHEMA, Decoded, Headers, RawRecord
from phoenix95.tap.expressions import Predicate, compile_expression

CORRELATION_HEADER = "p95-correlation-id"

REJECT, PASS, SIGNAL_MATCHED = 0, 1, 2


@dataclass(frozen=True)
class FilterSpec:
    keys: tuple[str, ...] = ()
    symbols: tuple[str, ...] = ()
    signals: tuple[str, ...] = ()
    #: `name=value` (that value) or `name` (present with any value)
    headers: tuple[str, ...] = ()
    where: str | None = None

    @property
    def active(self) -> bool:
        return bool(self.keys or self.symbols or self.signals or self.headers or self.where)

    @property
    def needs_value(self) -> bool:
        return bool(self.symbols or self.signals or self.where)

    def validate(self) -> None:
        """Raise ValueError (ExpressionError for --where) for an unusable filter."""
        for header in self.headers:
            if not header.partition("=")[0]:
                raise ValueError(f"--header {header!r}: expected name=value or name")
        if self.where is not None:
            compile_expression(self.where)


class RecordFilter:
    def __init__(self, spec: FilterSpec):
        self.spec = spec
        self._keys = frozenset(key.encode() for key in spec.keys)
        self._symbols = frozenset(symbol.strip().upper() for symbol in spec.symbols)
        self._signals = frozenset(spec.signals)
        self._headers = [_header_test(text) for text in spec.headers]
        self._where: Predicate | None = compile_expression(spec.where) if spec.where is not None else None

    def before_decode(self, key: bytes | None, headers: Headers) -> int:
        """REJECT, PASS, or SIGNAL_MATCHED (the correlation header names a wanted signal)."""
        if self._keys and key not in self._keys:
            return REJECT
        for name, wanted in self._headers:
            if not any(h_name == name and (wanted is None or h_value == wanted) for h_name, h_value in headers):
                return REJECT
        if self._signals:
            for name, value in headers:
                if name == CORRELATION_HEADER and value is not None:
                    return SIGNAL_MATCHED if value.decode("utf-8", "replace") in self._signals else REJECT
        return PASS

    def after_decode(self, record: RawRecord, decoded: Decoded, state: int) -> bool:
        value = decoded.value
        if self._signals and state != SIGNAL_MATCHED and not self._signal_matches(record, decoded):
            return False
        if self._symbols and _symbol_of(record, decoded) not in self._symbols:
            return False
        return self._where is None or self._where(value, metadata_of(record, decoded))

    def _signal_matches(self, record: RawRecord, decoded: Decoded) -> bool:
        value = decoded.value
        if not isinstance(value, dict):
            return False
        if value.get("signal_id") in self._signals or value.get("correlation_id") in self._signals:
            return True
        if decoded.schema == JSON_SCHEMA:
            return json_signal_id(record, value) in self._signals
        return False


def _header_test(text: str) -> tuple[str, bytes | None]:
    name, equals, value = text.partition("=")
    return name, (value.encode() if equals else None)


def json_signal_id(record: RawRecord, payload: Mapping[str, Any]) -> str:
    """The id the analysis stage gives a JSON signal: its own (`signal_id` or `id`), else one
    derived from where it was read."""
    from phoenix95.domain import ids

    own = payload.get("signal_id", payload.get("id"))
    if own is not None:
        return str(own)
    topic, partition, offset = record[0], record[1], record[2]
    return ids.derive("json-signal", topic, partition, offset)


def _symbol_of(record: RawRecord, decoded: Decoded) -> str | None:
    value = decoded.value
    symbol: Any = None
    if isinstance(value, dict):
        if decoded.schema == JSON_SCHEMA:
            from phoenix95.schemas.signal_input import normalize_symbol

            symbol = normalize_symbol(value.get("symbol", value.get("ticker", value.get("pair"))))
        else:
            symbol = value.get("symbol")
    if symbol is None:
        key = record[4]
        return key.decode("utf-8", "replace").upper() if key is not None else None
    return str(symbol).upper()


def metadata_of(record: RawRecord, decoded: Decoded) -> dict[str, Any]:
    """The message fields `$name` reads in --where and --fields."""
    topic, partition, offset, timestamp, key, headers, _value = record
    return {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "timestamp": datetime.fromtimestamp(timestamp / 1000, UTC) if timestamp is not None else None,
        "key": key.decode("utf-8", "replace") if key is not None else None,
        "schema": decoded.schema,
        "error": decoded.error,
        "headers": {name: (v.decode("utf-8", "replace") if v is not None else None) for name, v in headers},
    }
