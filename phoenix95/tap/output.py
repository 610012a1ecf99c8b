"""Printing records: `json` (one object per line), `pretty` (a coloured block per record), `raw`.

The JSON envelope, compatible in spirit with kcat's `-J`::

    {"topic": "p95.orders", "partition": 2, "offset": 17, "timestamp": 1795535710752,
     "key": "XRPUSDT", "headers": {"p95-schema": "phoenix95.Order.v2", ...},
     "schema": "phoenix95.Order.v2", "value": {...}}

`timestamp` is the record's timestamp in epoch milliseconds. Inside `value`, times are ISO-8601
strings and decimals stay strings, as they travel. Bytes that are not printable UTF-8 (a key, a
header, a bytes field) become `{"base64": "..."}`. An undecodable message has `"value": null`,
`"error"` (why) and `"raw"` (its bytes, base64). A tombstone has `"value": null` and no error.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, Protocol

from phoenix95.tap.decode import Decoded, Headers, RawRecord
from phoenix95.tap.encoding import bytes_for_json, json_default, json_line
from phoenix95.tap.expressions import Evaluator, compile_path
from phoenix95.tap.filters import metadata_of
from phoenix95.tap.positions import format_ms

Format = Literal["pretty", "json", "raw"]


class Formatter(Protocol):
    def format(self, record: RawRecord, decoded: Decoded) -> bytes: ...


def headers_for_json(headers: Headers) -> dict[str, Any]:
    found = {name: (None if value is None else bytes_for_json(value)) for name, value in headers}
    if len(found) == len(headers):
        return found
    repeated: dict[str, Any] = {}  # a name given more than once: a list of its values
    for name, value in headers:
        shown = None if value is None else bytes_for_json(value)
        if name in repeated:
            previous = repeated[name]
            repeated[name] = [*previous, shown] if isinstance(previous, list) else [previous, shown]
        else:
            repeated[name] = shown
    return repeated


class FieldSelection:
    """`--fields a,b.c,$offset`: the value becomes {"a": ..., "b.c": ..., "$offset": ...}."""

    def __init__(self, paths: Sequence[str]):
        self.paths = [path.strip() for path in paths if path.strip()]
        self._evaluators: list[tuple[str, Evaluator]] = [(path, compile_path(path)) for path in self.paths]
        self._needs_metadata = any(path.startswith("$") for path in self.paths)

    def select(self, record: RawRecord, decoded: Decoded) -> dict[str, Any]:
        metadata: Mapping[str, Any] = metadata_of(record, decoded) if self._needs_metadata else {}
        return {path: evaluate(decoded.value, metadata) for path, evaluate in self._evaluators}


class JsonFormatter:
    def __init__(self, fields: FieldSelection | None = None):
        self.fields = fields

    def format(self, record: RawRecord, decoded: Decoded) -> bytes:
        topic, partition, offset, timestamp, key, headers, value = record
        envelope = {
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "timestamp": timestamp,
            "key": None if key is None else bytes_for_json(key),
            "headers": headers_for_json(headers) if headers else {},
            "schema": decoded.schema,
            "value": decoded.value if self.fields is None else self.fields.select(record, decoded),
        }
        if decoded.error is not None:
            envelope["error"] = decoded.error
            envelope["raw"] = base64.b64encode(value).decode("ascii") if value is not None else None
        return json_line(envelope)


class RawFormatter:
    """The value's bytes as they are, one per line (kcat's default)."""

    def format(self, record: RawRecord, decoded: Decoded) -> bytes:
        value = record[6]
        return value + b"\n" if value is not None else b"\n"


class PrettyFormatter:
    """A block per record: a metadata line, then the fields, nested records indented."""

    def __init__(self, *, color: bool, width: int = 120, fields: FieldSelection | None = None):
        from rich.console import Console

        self.fields = fields
        self._buffer = io.StringIO()
        self._console = Console(
            file=self._buffer,
            force_terminal=color,
            no_color=not color,
            color_system="standard" if color else None,
            width=width,
            highlight=False,
            soft_wrap=True,
            emoji=False,
            markup=False,
        )

    def format(self, record: RawRecord, decoded: Decoded) -> bytes:
        from rich.text import Text

        topic, partition, offset, timestamp, key, headers, value = record
        text = Text()
        text.append(f"{topic}", style="bold cyan")
        text.append(f" [{partition}] @{offset}", style="cyan")
        if timestamp is not None and timestamp >= 0:
            text.append(f"  {format_ms(timestamp)}", style="green")
        if key is not None:
            text.append("  key ", style="dim")
            text.append(_plain(key), style="bold")
        if decoded.schema:
            text.append(f"  {decoded.schema}", style="magenta")
        text.append("\n")
        if headers:
            shown = "  ".join(f"{name}={_plain(v) if v is not None else 'null'}" for name, v in headers)
            text.append(f"  headers  {shown}\n", style="dim")
        if decoded.error is not None:
            text.append(f"  error  {decoded.error}\n", style="bold red")
            text.append(_hexdump(value or b""), style="yellow")
        elif decoded.value is None:
            text.append("  (tombstone: no value)\n", style="dim")
        else:
            shown_value = decoded.value if self.fields is None else self.fields.select(record, decoded)
            _append_fields(text, shown_value, indent=2)
        self._console.print(text)
        rendered = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return rendered.encode()


def _plain(data: bytes) -> str:
    shown = bytes_for_json(data)
    return shown if isinstance(shown, str) else f"base64:{shown['base64']}"


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return _plain(value)
    if isinstance(value, str):
        return value
    return json.dumps(value, default=json_default, ensure_ascii=False)


def _append_fields(text: Any, value: Any, *, indent: int) -> None:
    if not isinstance(value, dict):
        text.append(" " * indent + _scalar(value) + "\n")
        return
    width = max((len(str(name)) for name in value), default=0)
    for name, item in value.items():
        label = " " * indent + str(name).ljust(width)
        if isinstance(item, dict):
            text.append(label.rstrip() + "\n", style="blue")
            _append_fields(text, item, indent=indent + 2)
        elif isinstance(item, list) and any(isinstance(element, dict) for element in item):
            text.append(label.rstrip() + "\n", style="blue")
            for element in item:
                text.append(" " * (indent + 2) + "-\n", style="dim")
                _append_fields(text, element, indent=indent + 4)
        else:
            text.append(label, style="blue")
            shown = "[" + ", ".join(_scalar(e) for e in item) + "]" if isinstance(item, list) else _scalar(item)
            text.append("  " + shown + "\n", style="dim" if item is None else "")


def _hexdump(data: bytes, limit: int = 512) -> str:
    lines = []
    for start in range(0, min(len(data), limit), 16):
        chunk = data[start : start + 16]
        hex_part = " ".join(f"{byte:02x}" for byte in chunk)
        ascii_part = "".join(chr(byte) if 32 <= byte < 127 else "." for byte in chunk)
        lines.append(f"  {start:08x}  {hex_part:<47}  {ascii_part}")
    if len(data) > limit:
        lines.append(f"  ... {len(data) - limit} more bytes")
    lines.append(f"  ({len(data)} bytes)")
    return "\n".join(lines) + "\n"


def formatter_for(format_: Format, *, fields: Sequence[str] = (), color: bool = False, width: int = 120) -> Formatter:
    selection = FieldSelection(fields) if fields else None
    if format_ == "json":
        return JsonFormatter(selection)
    if format_ == "pretty":
        return PrettyFormatter(color=color, width=width, fields=selection)
    if selection is not None:
        raise ValueError("--fields does not apply to --format raw (raw prints the value's bytes as they are)")
    return RawFormatter()
