"""JSON for the tap: one compact line per record, times as ISO-8601, bytes as text or base64.

orjson, when installed, encodes about twice as fast as the standard library (this is half of what a
tap spends per message after decoding); the standard library's C encoder is the fallback, and is
also used for what orjson refuses (integers beyond 64 bits in foreign JSON). Both write UTF-8 as is
and give the same JSON for our messages.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

_PRINTABLE_CONTROLS = frozenset("\n\r\t")


def bytes_for_json(data: bytes) -> str | dict[str, str]:
    """Printable UTF-8 as a string, anything else as {"base64": ...}."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}
    if text.isprintable() or all(c.isprintable() or c in _PRINTABLE_CONTROLS for c in text):
        return text
    return {"base64": base64.b64encode(data).decode("ascii")}


def json_default(value: Any) -> Any:
    """What JSON cannot hold, as the tap shows it."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes_for_json(bytes(value))
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)


_encoder = json.JSONEncoder(default=json_default, separators=(",", ":"), ensure_ascii=False, check_circular=False)
#: The C encoder itself, made once: JSONEncoder.encode would build it again for every record.
_make_c_encoder = getattr(json.encoder, "c_make_encoder", None)
_c_encode = (
    _make_c_encoder(None, json_default, json.encoder.encode_basestring, None, ":", ",", False, False, True)
    if _make_c_encoder is not None
    else None
)


def stdlib_line(value: Any) -> bytes:
    text = "".join(_c_encode(value, 0)) if _c_encode is not None else _encoder.encode(value)
    return (text + "\n").encode("utf-8", "surrogatepass")


def _orjson_line_encoder() -> Callable[[Any], bytes] | None:
    try:
        import orjson
    except ImportError:
        return None
    dumps, option, refused = orjson.dumps, orjson.OPT_APPEND_NEWLINE, orjson.JSONEncodeError

    def orjson_line(value: Any) -> bytes:
        try:
            return dumps(value, default=json_default, option=option)
        except refused:  # e.g. an integer beyond 64 bits, a lone surrogate
            return stdlib_line(value)

    return orjson_line


_orjson_line = _orjson_line_encoder()
#: Which encoder `json_line` uses ("orjson" or "json").
ENCODER = "orjson" if _orjson_line is not None else "json"
json_line: Callable[[Any], bytes] = _orjson_line or stdlib_line
"""One compact JSON line (with its newline) for `value`."""


def encode_json(value: Any) -> str:
    """Compact JSON text for `value` (the same as `json_line`, without the newline)."""
    return json_line(value)[:-1].decode("utf-8", "surrogatepass")
