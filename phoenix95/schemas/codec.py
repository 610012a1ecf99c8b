"""The codec: the only module that touches Avro.

Framing, told apart by the first bytes:

* ``C3 01`` + 8-byte CRC-64-AVRO fingerprint (little-endian) + body: Avro single-object encoding,
  written when no schema registry is configured;
* ``00`` + 4-byte schema id (big-endian) + body: Confluent wire format, written when a registry URL
  is configured (Confluent- or Karapace-compatible; subjects use RecordNameStrategy);
* ``{``: JSON, accepted on ``p95.signals`` only (kcat, curl bridges, other languages), also when
  the ``content-type`` header says ``application/json``.

Decoding errors carry a dead-letter reason code.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Sequence
from enum import StrEnum
from typing import Any, TypeVar

import fastavro
from pydantic import ValidationError

from phoenix95.schemas.envelope import Event
from phoenix95.schemas.messages import MODELS, Signal
from phoenix95.schemas.registry import SchemaRegistryClient, SchemaSet, SchemaVersion, bundled_schemas
from phoenix95.schemas.signal_input import InvalidSignal, build_signal

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = 0
JSON_CONTENT_TYPE = "application/json"
AVRO_CONTENT_TYPE = "application/vnd.phoenix95+avro"
MAX_MESSAGE_BYTES = 1_000_000

E = TypeVar("E", bound=Event)
Headers = Sequence[tuple[str, bytes | None]]


class Reason(StrEnum):
    """Dead-letter reason codes (a fixed list)."""

    EMPTY_MESSAGE = "EMPTY_MESSAGE"
    OVERSIZED_MESSAGE = "OVERSIZED_MESSAGE"
    DECODE_ERROR = "DECODE_ERROR"
    SCHEMA_MISMATCH = "SCHEMA_MISMATCH"
    VALIDATION_ERROR = "VALIDATION_ERROR"
    UNKNOWN_SYMBOL = "UNKNOWN_SYMBOL"
    DUPLICATE = "DUPLICATE"
    SINK_REJECTED = "SINK_REJECTED"
    PROCESSING_ERROR = "PROCESSING_ERROR"


class DecodeError(Exception):
    def __init__(self, reason: Reason, message: str):
        self.reason = reason
        self.message = message
        super().__init__(f"{reason.value}: {message}")


class Codec:
    def __init__(self, schemas: SchemaSet | None = None, registry: SchemaRegistryClient | None = None):
        self.schemas = schemas or bundled_schemas()
        self.registry = registry
        self._latest: dict[str, SchemaVersion] = {name: self.schemas.latest(name) for name in self.schemas.names()}
        self._headers: dict[str, bytes] = {}
        #: id(event) -> (event, its bytes): a stage with an outbox encodes each output twice (the
        #: outbox row, then the produce); events are frozen, and holding the event keeps its id unique.
        self._encoded: dict[int, tuple[Event, bytes]] = {}
        self._registry_ids: dict[str, int] = {}
        self._registry_versions: dict[int, SchemaVersion] = {}
        #: (writer schema file, fields) -> the writer schema cut after the last of those fields.
        self._prefixes: dict[tuple[str, tuple[str, ...]], Any] = {}

    @classmethod
    def for_settings(cls, settings: Any) -> Codec:
        """The codec every Phoenix95 writer uses: Confluent framing through the schema registry when
        `kafka.schema_registry_url` is set, Avro single-object encoding otherwise."""
        url = settings.kafka.schema_registry_url
        return cls(registry=SchemaRegistryClient(url) if url else None)

    # -- encoding --------------------------------------------------------------------------------

    def header_for(self, schema: SchemaVersion) -> bytes:
        cached = self._headers.get(schema.file)
        if cached is not None:
            return cached
        if self.registry is not None:
            schema_id = self.registry.register(schema.name, schema.raw)
            self._registry_versions[schema_id] = schema
            header = bytes([CONFLUENT_MAGIC]) + struct.pack(">I", schema_id)
        else:
            header = SINGLE_OBJECT_MAGIC + schema.fingerprint_bytes
        self._headers[schema.file] = header
        return header

    def prepare(self) -> None:
        """Register every latest schema up front (so the first message does not wait on HTTP)."""
        for schema in self._latest.values():
            self.header_for(schema)

    #: Events whose bytes are remembered (one batch's outputs; the memo is emptied when full).
    ENCODED_MEMO = 8192

    def encode(self, event: Event) -> bytes:
        hit = self._encoded.get(id(event))
        if hit is not None and hit[0] is event:
            return hit[1]
        data = self.encode_record(event.SCHEMA_NAME, event.to_avro())
        if len(self._encoded) >= self.ENCODED_MEMO:
            self._encoded.clear()
        self._encoded[id(event)] = (event, data)
        return data

    def encode_record(self, schema_name: str, record: dict[str, Any]) -> bytes:
        schema = self._latest[schema_name]
        buffer = io.BytesIO()
        buffer.write(self.header_for(schema))
        fastavro.schemaless_writer(buffer, schema.parsed, record)
        return buffer.getvalue()

    def schema_header(self, event: Event) -> tuple[str, bytes]:
        schema = self._latest[event.SCHEMA_NAME]
        return ("p95-schema", f"{schema.name}.v{schema.version}".encode())

    # -- decoding --------------------------------------------------------------------------------

    def writer_schema(self, data: bytes) -> tuple[SchemaVersion, int]:
        """The schema that wrote `data` and the offset of the Avro body."""
        if data[:2] == SINGLE_OBJECT_MAGIC:
            if len(data) < 10:
                raise DecodeError(Reason.DECODE_ERROR, "truncated single-object header")
            fingerprint = int.from_bytes(data[2:10], "little")
            schema = self.schemas.by_fingerprint(fingerprint)
            if schema is None:
                raise DecodeError(Reason.SCHEMA_MISMATCH, f"unknown schema fingerprint {fingerprint:016x}")
            return schema, 10
        if data[0] == CONFLUENT_MAGIC:
            if len(data) < 5:
                raise DecodeError(Reason.DECODE_ERROR, "truncated Confluent header")
            schema_id = struct.unpack(">I", data[1:5])[0]
            return self._registry_schema(schema_id), 5
        raise DecodeError(Reason.DECODE_ERROR, f"unknown framing (first bytes {data[:4].hex()})")

    def _registry_schema(self, schema_id: int) -> SchemaVersion:
        cached = self._registry_versions.get(schema_id)
        if cached is not None:
            return cached
        if self.registry is None:
            raise DecodeError(
                Reason.SCHEMA_MISMATCH, f"Confluent schema id {schema_id} but no schema registry configured"
            )
        try:
            text = self.registry.schema(schema_id)
        except Exception as error:  # the registry is down or does not know the id
            raise DecodeError(Reason.SCHEMA_MISMATCH, str(error)) from error
        canonical = fastavro.schema.to_parsing_canonical_form(json.loads(text))
        schema = self.schemas.by_canonical(canonical)
        if schema is None:
            raise DecodeError(Reason.SCHEMA_MISMATCH, f"schema id {schema_id} is not a Phoenix95 schema")
        self._registry_versions[schema_id] = schema
        return schema

    def _writer_of(self, data: bytes, model: type[Event]) -> tuple[SchemaVersion, int]:
        """The writer schema of a message that must have been written for `model`, and where its body starts."""
        writer, offset = self.writer_schema(data)
        if writer.name != model.SCHEMA_NAME:
            raise DecodeError(
                Reason.SCHEMA_MISMATCH,
                f"expected {model.SCHEMA_NAME}, message was written as {writer.name}.v{writer.version}",
            )
        return writer, offset

    def decode(self, data: bytes, model: type[E], *, headers: Headers = ()) -> E:
        """Decode a value written for `model` (or JSON, when `model` is Signal)."""
        self._check_size(data)
        if model is Signal and _looks_like_json(data, headers):
            raise DecodeError(Reason.DECODE_ERROR, "JSON signal: use decode_signal() with the message coordinates")
        writer, offset = self._writer_of(data, model)
        record = self._read(data, offset, writer)
        try:
            return model.model_validate(record)
        except ValidationError as error:
            raise DecodeError(Reason.VALIDATION_ERROR, _validation_text(error)) from None

    def read(self, data: bytes, model: type[Event]) -> dict[str, Any]:
        """The record of a `model` message as Avro reads it (the latest reader schema's fields, logical
        types applied: decimals stay strings), without the model's validation: for a consumer that only
        copies fields into text (the notification hub), where validating costs as much as reading."""
        self._check_size(data)
        writer, offset = self._writer_of(data, model)
        return self._read(data, offset, writer)

    def peek(self, data: bytes, model: type[Event], fields: tuple[str, ...]) -> dict[str, Any]:
        """A few fields of a `model` message, read without the rest of it and without validation: the
        body is read only up to the last of `fields` in the writer's field order (a consumer that acts
        on few of the messages it reads decides from these, and decodes the ones it acts on).
        Timestamps come back as microseconds since the epoch. A message whose prefix does not read
        raises DecodeError; bytes after the prefix are not looked at."""
        self._check_size(data)
        writer, offset = self._writer_of(data, model)
        prefix = self._prefixes.get((writer.file, fields))
        if prefix is None:
            prefix = self._prefixes[(writer.file, fields)] = _prefix_schema(writer, fields)
        buffer = io.BytesIO(data)
        buffer.seek(offset)
        try:
            record = fastavro.schemaless_reader(buffer, prefix, None)
        except Exception as error:
            raise DecodeError(Reason.DECODE_ERROR, f"{type(error).__name__}: {error}"[:500]) from None
        if not isinstance(record, dict):
            raise DecodeError(Reason.SCHEMA_MISMATCH, "not a record")
        return record

    def decode_any(self, data: bytes) -> tuple[SchemaVersion, dict[str, Any]]:
        """Decode any Phoenix95 Avro message to (writer schema, record dict), without validation."""
        self._check_size(data)
        writer, offset = self.writer_schema(data)
        return writer, self._read(data, offset, writer)

    def decode_signal(
        self,
        data: bytes,
        *,
        headers: Headers = (),
        fallback_id: str,
        ingest_time: Any = None,
    ) -> Signal:
        """Decode a signal from Avro or JSON. `fallback_id` (derived from the message coordinates)
        becomes the signal id of a JSON signal that has none, so a re-delivery keeps its id."""
        self._check_size(data)
        if not _looks_like_json(data, headers):
            return self.decode(data, Signal)
        try:
            payload = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise DecodeError(Reason.DECODE_ERROR, f"invalid UTF-8 in JSON: {error}") from None
        except ValueError as error:
            raise DecodeError(Reason.DECODE_ERROR, f"invalid JSON: {error}") from None
        if not isinstance(payload, dict):
            raise DecodeError(Reason.VALIDATION_ERROR, "a JSON signal must be an object")
        try:
            return build_signal(
                payload, producer="json", signal_id=fallback_id, ts_ingest=ingest_time, default_source="custom"
            )
        except InvalidSignal as error:
            raise DecodeError(Reason.VALIDATION_ERROR, str(error)) from None

    def _read(self, data: bytes, offset: int, writer: SchemaVersion) -> dict[str, Any]:
        reader = self._latest.get(writer.name, writer)
        buffer = io.BytesIO(data)
        buffer.seek(offset)
        try:
            record = fastavro.schemaless_reader(buffer, writer.parsed, reader.parsed if reader is not writer else None)
        except UnicodeDecodeError as error:
            raise DecodeError(Reason.DECODE_ERROR, f"invalid UTF-8 in a string: {error}") from None
        except Exception as error:
            raise DecodeError(Reason.DECODE_ERROR, f"{type(error).__name__}: {error}"[:500]) from None
        if buffer.tell() != len(data):
            raise DecodeError(
                Reason.SCHEMA_MISMATCH,
                f"{len(data) - buffer.tell()} bytes left after reading {writer.name}.v{writer.version}",
            )
        if not isinstance(record, dict):
            raise DecodeError(Reason.SCHEMA_MISMATCH, "not a record")
        return record

    @staticmethod
    def _check_size(data: bytes) -> None:
        if not data:
            raise DecodeError(Reason.EMPTY_MESSAGE, "empty message")
        if len(data) > MAX_MESSAGE_BYTES:
            raise DecodeError(Reason.OVERSIZED_MESSAGE, f"{len(data)} bytes > {MAX_MESSAGE_BYTES}")


def _prefix_schema(writer: SchemaVersion, fields: tuple[str, ...]) -> Any:
    """The writer schema's fields up to the last of `fields` (every one must exist), logical types
    dropped (a timestamp stays an int: nothing to build)."""
    names = [field["name"] for field in writer.raw["fields"]]
    missing = [name for name in fields if name not in names]
    if missing:
        raise DecodeError(Reason.SCHEMA_MISMATCH, f"{writer.name}.v{writer.version} has no field {', '.join(missing)}")
    last = max(names.index(name) for name in fields)

    def plain(kind: Any) -> Any:
        if isinstance(kind, dict) and "logicalType" in kind and kind.get("type") in ("int", "long", "bytes", "string"):
            return kind["type"]
        if isinstance(kind, list):
            return [plain(branch) for branch in kind]
        return kind

    cut = {
        "type": "record",
        "name": f"{writer.raw['name']}_prefix_{last}",
        "namespace": writer.raw.get("namespace", ""),
        "fields": [{"name": f["name"], "type": plain(f["type"])} for f in writer.raw["fields"][: last + 1]],
    }
    return fastavro.parse_schema(cut, named_schemas={})


def _looks_like_json(data: bytes, headers: Headers) -> bool:
    for key, value in headers:
        if key.lower() == "content-type" and value is not None:
            return value.decode("latin-1").lower().startswith(JSON_CONTENT_TYPE)
    return data.lstrip()[:1] in (b"{", b"[")


def _validation_text(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False):
        location = ".".join(str(part) for part in item.get("loc", ())) or "message"
        parts.append(f"{location}: {item.get('msg', 'invalid')}")
    return "; ".join(parts)[:2000]


def model_for(name: str) -> type[Event]:
    return MODELS[name]
