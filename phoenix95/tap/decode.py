"""Decoding what is on a topic into readable records, whatever it is.

Our Avro (any framing the codec writes) becomes the record dict (`Codec.decode_any`: no pydantic on
this path); JSON becomes the parsed object; anything else is kept as bytes with the reason it could
not be read. Decoding never raises.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

from phoenix95.schemas.codec import JSON_CONTENT_TYPE, Codec, DecodeError

#: One message as read from the broker: (topic, partition, offset, timestamp in epoch ms, key,
#: headers, value). A plain tuple: it is built, pickled and unpacked for every message.
Headers = Sequence[tuple[str, bytes | None]]
RawRecord = tuple[str, int, int, int, bytes | None, Headers, bytes | None]

JSON_SCHEMA = "json"


#: First bytes of the codec's framings: single-object Avro (C3 01), Confluent (00), JSON ({ or [).
_AVRO_FIRST_BYTES = (0xC3, 0x00)
_JSON_FIRST_BYTES = (0x7B, 0x5B)


class Decoded(NamedTuple):
    """A decoded value: `schema` names what wrote it ("phoenix95.Signal.v1", "json"), `value` is the
    record (None for a tombstone or when undecodable) and `error` why it could not be decoded."""

    schema: str | None
    value: Any
    error: str | None


TOMBSTONE = Decoded(None, None, None)


class Decoder:
    def __init__(self, codec: Codec | None = None):
        self.codec = codec or Codec()
        self._labels: dict[int, str] = {}

    @classmethod
    def for_registry(cls, schema_registry_url: str | None) -> Decoder:
        """A decoder that also reads the Confluent framing, when a schema registry is configured."""
        if not schema_registry_url:
            return cls()
        from phoenix95.schemas.registry import SchemaRegistryClient

        return cls(Codec(registry=SchemaRegistryClient(schema_registry_url)))

    def decode(self, value: bytes | None, headers: Headers) -> Decoded:
        if value is None:
            return TOMBSTONE
        framing = value[0] if value else None
        if framing not in _AVRO_FIRST_BYTES and (framing in _JSON_FIRST_BYTES or _json_text(value, headers)):
            return _decode_json(value)
        try:
            writer, record = self.codec.decode_any(value)
        except DecodeError as error:
            return Decoded(None, None, str(error))
        label = self._labels.get(id(writer))
        if label is None:
            label = self._labels[id(writer)] = f"{writer.name}.v{writer.version}"
        return Decoded(label, record, None)


def _json_text(value: bytes, headers: Headers) -> bool:
    return bool(value) and (_json_by_header(headers) or value.lstrip()[:1] in (b"{", b"["))


def _json_by_header(headers: Headers) -> bool:
    for name, header_value in headers:
        if header_value is not None and name.lower() == "content-type":
            return header_value[: len(JSON_CONTENT_TYPE)].lower() == JSON_CONTENT_TYPE.encode()
    return False


def _decode_json(value: bytes) -> Decoded:
    try:
        return Decoded(JSON_SCHEMA, json.loads(value), None)
    except UnicodeDecodeError as error:
        return Decoded(None, None, f"DECODE_ERROR: invalid UTF-8 in JSON: {error}")
    except ValueError as error:
        return Decoded(None, None, f"DECODE_ERROR: invalid JSON: {error}")
