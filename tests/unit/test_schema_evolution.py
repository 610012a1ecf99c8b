"""Schema evolution: every stored version of every schema is FULL_TRANSITIVE compatible, and an
incompatible change is caught."""

from __future__ import annotations

import copy
import io
import json

import fastavro

from phoenix95.schemas.compat import can_read, check_full_transitive
from phoenix95.schemas.registry import SchemaSet, bundled_schemas, load_version


def test_repository_schemas_are_full_transitive_compatible():
    schemas = bundled_schemas()
    for name in schemas.names():
        assert check_full_transitive(schemas.versions(name)) == []


def _signal_v1() -> dict:
    return copy.deepcopy(bundled_schemas().versions("phoenix95.Signal")[0].raw)


def _as_version(raw: dict, version: int):
    return load_version(f"signal.v{version}.avsc", json.dumps(raw))


def test_adding_an_optional_field_with_a_default_is_compatible_both_ways():
    v2 = _signal_v1()
    v2["fields"].append({"name": "exchange", "type": "string", "default": "binance"})
    versions = [_as_version(_signal_v1(), 1), _as_version(v2, 2)]
    assert check_full_transitive(versions) == []


def test_adding_a_field_without_a_default_is_caught():
    v2 = _signal_v1()
    v2["fields"].append({"name": "leverage_hint", "type": "int"})
    problems = check_full_transitive([_as_version(_signal_v1(), 1), _as_version(v2, 2)])
    assert any("leverage_hint" in p and "without a default" in p for p in problems)


def test_changing_a_field_type_is_caught():
    v2 = _signal_v1()
    for field in v2["fields"]:
        if field["name"] == "price":
            field["type"] = "double"
    problems = check_full_transitive([_as_version(_signal_v1(), 1), _as_version(v2, 2)])
    assert any("price" in p for p in problems)


def test_removing_a_field_without_a_default_is_caught_for_old_readers():
    v2 = _signal_v1()
    v2["fields"] = [f for f in v2["fields"] if f["name"] != "symbol"]
    problems = check_full_transitive([_as_version(_signal_v1(), 1), _as_version(v2, 2)])
    assert any("signal.v1.avsc cannot read signal.v2.avsc" in p and "symbol" in p for p in problems)


def test_the_checker_agrees_with_fastavro_schema_resolution():
    v1, v2 = _signal_v1(), _signal_v1()
    v2["fields"].append({"name": "exchange", "type": "string", "default": "binance"})
    record = {
        "event_id": "e",
        "correlation_id": "e",
        "causation_id": None,
        "ts_event": 1,
        "ts_ingest": 1,
        "schema_version": 1,
        "producer": "p",
        "signal_id": "e",
        "symbol": "BTCUSDT",
        "action": "buy",
        "price": "1",
        "confidence": "0.5",
        "strategy": "s",
        "timeframe": "1h",
        "rsi": None,
        "macd": None,
        "volume": None,
        "source": "custom",
        "source_timestamp": None,
        "raw": None,
    }
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(v1), record)
    buffer.seek(0)
    read = fastavro.schemaless_reader(buffer, fastavro.parse_schema(v1), fastavro.parse_schema(v2))
    assert read["exchange"] == "binance"
    assert can_read(v2, v1) == []


def test_a_bad_schema_file_in_the_set_fails_the_repository_check():
    bad = _signal_v1()
    bad["fields"].append({"name": "must_have", "type": "string"})
    schemas = SchemaSet([*bundled_schemas(), _as_version(bad, 99)])
    assert check_full_transitive(schemas.versions("phoenix95.Signal"))
