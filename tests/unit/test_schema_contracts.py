"""The Avro contracts: every topic has a schema, models mirror schemas, the envelope is everywhere,
and the codec round-trips every message in every framing."""

from __future__ import annotations

import types
import typing
from datetime import datetime
from decimal import Decimal

import fastavro
import pytest
from pydantic import AwareDatetime, BaseModel

from phoenix95.schemas import topics
from phoenix95.schemas.codec import Codec
from phoenix95.schemas.messages import MODELS, Signal
from phoenix95.schemas.registry import bundled_schemas, rabin_fingerprint
from phoenix95.streams.producer import DERIVED_TOPICS, TOPIC_OF
from tests import factories

ENVELOPE = ["event_id", "correlation_id", "causation_id", "ts_event", "ts_ingest", "schema_version", "producer"]
PRIMITIVE_OF = {str: "string", int: "int", bytes: "bytes", bool: "boolean"}


def _strip_optional(annotation):
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0], True
    return annotation, False


def _base(annotation):
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _check_record(model: type[BaseModel], avro: dict, where: str) -> list[str]:
    problems = []
    avro_fields = avro["fields"]
    model_fields = list(model.model_fields.items())
    if [f["name"] for f in avro_fields] != [name for name, _ in model_fields]:
        return [
            f"{where}: field names/order differ: avro {[f['name'] for f in avro_fields]} vs model {[n for n, _ in model_fields]}"
        ]
    for field, (name, info) in zip(avro_fields, model_fields, strict=True):
        avro_type = field["type"]
        nullable = isinstance(avro_type, list) and "null" in avro_type
        if nullable:
            avro_type = next(t for t in avro_type if t != "null")
        annotation, optional = _strip_optional(_base(info.annotation))
        annotation = _base(annotation)
        if nullable != optional:
            problems.append(f"{where}.{name}: nullable in avro={nullable}, optional in model={optional}")
        if (field.get("default", ...) is not ...) != (not info.is_required()):
            problems.append(f"{where}.{name}: default in avro and model disagree")
        if isinstance(avro_type, dict) and avro_type.get("logicalType") == "timestamp-micros":
            if (
                not (isinstance(annotation, type) and issubclass(annotation, datetime))
                and annotation is not AwareDatetime
            ):
                problems.append(f"{where}.{name}: timestamp in avro but {annotation} in model")
        elif field.get("p95.type") == "decimal":
            if annotation is not Decimal:
                problems.append(f"{where}.{name}: decimal string in avro but {annotation} in model")
        elif isinstance(avro_type, dict) and avro_type.get("type") == "array":
            item = typing.get_args(annotation)[0]
            item = _base(item)
            if isinstance(avro_type["items"], dict):
                problems += _check_record(item, avro_type["items"], f"{where}.{name}[]")
            elif PRIMITIVE_OF.get(item) != avro_type["items"]:
                problems.append(f"{where}.{name}: array of {avro_type['items']} vs {item}")
        elif isinstance(avro_type, dict) and avro_type.get("type") == "record":
            problems += _check_record(annotation, avro_type, f"{where}.{name}")
        elif isinstance(avro_type, str):
            expected = {PRIMITIVE_OF.get(annotation)} if isinstance(annotation, type) else {"string"}
            if annotation is int:
                expected = {"int", "long"}
            if typing.get_origin(annotation) is typing.Literal:
                expected = {"string"}
            if avro_type not in expected:
                problems.append(f"{where}.{name}: avro {avro_type} vs model {annotation}")
    return problems


def test_every_topic_value_has_a_schema_and_a_model():
    # every topic holds one event type: its own, or a copy of some of another topic's (the lifecycle)
    assert set(TOPIC_OF.values()) | set(DERIVED_TOPICS) == set(topics.ALL)
    assert set(DERIVED_TOPICS.values()) <= set(TOPIC_OF)
    assert {model.SCHEMA_NAME for model in TOPIC_OF} == set(bundled_schemas().names())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_mirrors_the_latest_schema(name):
    schema = bundled_schemas().latest(name)
    assert _check_record(MODELS[name], schema.raw, name) == []
    assert schema.version == MODELS[name].SCHEMA_VERSION


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_schema_starts_with_the_envelope(name):
    for version in bundled_schemas().versions(name):
        assert [f["name"] for f in version.raw["fields"][: len(ENVELOPE)]] == ENVELOPE


def test_drift_check_notices_a_field_missing_from_the_model():
    raw = dict(bundled_schemas().latest("phoenix95.Signal").raw)
    raw["fields"] = [*raw["fields"], {"name": "leverage_hint", "type": ["null", "int"], "default": None}]
    assert _check_record(Signal, raw, "Signal")


def test_fingerprint_is_crc64_avro_of_the_parsing_canonical_form():
    for version in bundled_schemas():
        expected = fastavro.schema.fingerprint(version.canonical, "CRC-64-AVRO")
        # the single-object header carries it little-endian, which is also how fastavro prints it
        assert rabin_fingerprint(version.canonical.encode()).to_bytes(8, "little").hex() == expected


def test_signal_round_trips_in_single_object_framing_with_its_fingerprint():
    codec = Codec()
    signal = factories.signal(rsi="35", macd="-0.5", volume="1200.5")
    data = codec.encode(signal)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == bundled_schemas().latest("phoenix95.Signal").fingerprint_bytes
    decoded = codec.decode(data, Signal)
    assert decoded == signal
    assert isinstance(decoded.price, Decimal) and decoded.ts_event.tzinfo is not None


def test_every_message_type_round_trips(tmp_path):
    from tests.unit.samples import samples

    codec = Codec()
    for message in samples():
        assert codec.decode(codec.encode(message), type(message)) == message


def test_json_signal_is_accepted_and_gets_a_stable_id_from_its_coordinates():
    codec = Codec()
    body = b'{"ticker": "BINANCE:ETHUSDT.P", "action": "SELL", "close": 3000.5, "confidence": 0.7}'
    first = codec.decode_signal(body, fallback_id="id-from-offset")
    again = codec.decode_signal(body, fallback_id="id-from-offset")
    assert first.signal_id == again.signal_id == "id-from-offset"
    assert (first.symbol, first.action, first.price) == ("ETHUSDT", "sell", Decimal("3000.5"))
