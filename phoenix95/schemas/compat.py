"""Avro schema compatibility, following the specification's schema-resolution rules.

FULL_TRANSITIVE: every version can read data written by every other version (new readers read old
data, old readers read new data, defaults filled). `check_full_transitive` returns the problems
found; an empty list means the change is safe for every producer and consumer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from phoenix95.schemas.registry import SchemaVersion

_PROMOTIONS = {
    "int": {"int", "long", "float", "double"},
    "long": {"long", "float", "double"},
    "float": {"float", "double"},
    "double": {"double"},
    "string": {"string", "bytes"},
    "bytes": {"bytes", "string"},
}
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def _type_name(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return "union"
    return str(schema["type"]) if not isinstance(schema["type"], dict | list) else _type_name(schema["type"])


def _named(schema: Any, names: dict[str, Any]) -> Any:
    """Resolve a reference to a named type defined elsewhere in the schema."""
    if isinstance(schema, str) and schema not in _PRIMITIVES:
        return names.get(schema, schema)
    return schema


def _collect(schema: Any, names: dict[str, Any], namespace: str = "") -> None:
    if isinstance(schema, list):
        for branch in schema:
            _collect(branch, names, namespace)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "enum", "fixed"):
            space = schema.get("namespace", namespace)
            name = schema["name"] if "." in schema["name"] or not space else f"{space}.{schema['name']}"
            names[name] = schema
            names[schema["name"]] = schema
            for field in schema.get("fields", []):
                _collect(field["type"], names, space)
        elif kind in ("array",):
            _collect(schema["items"], names, namespace)
        elif kind == "map":
            _collect(schema["values"], names, namespace)
        elif isinstance(kind, dict | list):
            _collect(kind, names, namespace)


def can_read(reader: Any, writer: Any) -> list[str]:
    """Problems that stop `reader` from reading data written with `writer` (empty: compatible)."""
    reader_names: dict[str, Any] = {}
    writer_names: dict[str, Any] = {}
    _collect(reader, reader_names)
    _collect(writer, writer_names)
    problems: list[str] = []
    _check(reader, writer, reader_names, writer_names, "", problems)
    return problems


def _unwrap(schema: Any, names: dict[str, Any]) -> Any:
    schema = _named(schema, names)
    while isinstance(schema, dict) and isinstance(schema.get("type"), dict | list):
        schema = schema["type"]
    if isinstance(schema, dict) and schema.get("type") in _PRIMITIVES and "logicalType" in schema:
        return schema["type"]
    if isinstance(schema, dict) and schema.get("type") in _PRIMITIVES:
        return schema["type"]
    return schema


def _check(reader: Any, writer: Any, rn: dict[str, Any], wn: dict[str, Any], path: str, problems: list[str]) -> None:
    reader = _unwrap(reader, rn)
    writer = _unwrap(writer, wn)
    if isinstance(writer, list):
        for branch in writer:
            _check(reader, branch, rn, wn, path, problems)
        return
    if isinstance(reader, list):
        for branch in reader:
            trial: list[str] = []
            _check(branch, writer, rn, wn, path, trial)
            if not trial:
                return
        problems.append(f"{path or '<root>'}: no branch of the reader's union reads the writer's {_type_name(writer)}")
        return
    reader_kind = _type_name(reader)
    writer_kind = _type_name(writer)
    if writer_kind in _PRIMITIVES or reader_kind in _PRIMITIVES:
        if reader_kind not in _PROMOTIONS.get(writer_kind, {writer_kind}):
            problems.append(f"{path or '<root>'}: writer's {writer_kind} cannot be read as {reader_kind}")
        return
    if reader_kind != writer_kind:
        problems.append(f"{path or '<root>'}: writer's {writer_kind} cannot be read as {reader_kind}")
        return
    if reader_kind == "record":
        if reader["name"].split(".")[-1] != writer["name"].split(".")[-1] and writer["name"] not in reader.get(
            "aliases", []
        ):
            problems.append(f"{path or '<root>'}: record {writer['name']} read as {reader['name']}")
            return
        writer_fields = {f["name"]: f for f in writer["fields"]}
        for field in reader["fields"]:
            source = writer_fields.get(field["name"])
            if source is None:
                for alias in field.get("aliases", []):
                    source = writer_fields.get(alias)
                    if source is not None:
                        break
            where = f"{path}.{field['name']}" if path else field["name"]
            if source is None:
                if "default" not in field:
                    problems.append(f"{where}: new field without a default (old data has no value for it)")
                continue
            _check(field["type"], source["type"], rn, wn, where, problems)
    elif reader_kind == "enum":
        missing = set(writer["symbols"]) - set(reader["symbols"])
        if missing and "default" not in reader:
            problems.append(f"{path or '<root>'}: enum symbols {sorted(missing)} unknown to the reader")
    elif reader_kind == "array":
        _check(reader["items"], writer["items"], rn, wn, f"{path}[]", problems)
    elif reader_kind == "map":
        _check(reader["values"], writer["values"], rn, wn, f"{path}{{}}", problems)
    elif reader_kind == "fixed" and reader.get("size") != writer.get("size"):
        problems.append(f"{path or '<root>'}: fixed size {writer.get('size')} read as {reader.get('size')}")


def check_full_transitive(versions: Sequence[SchemaVersion]) -> list[str]:
    """Every version reads every other version's data."""
    problems = []
    for reader in versions:
        for writer in versions:
            if reader is writer:
                continue
            for problem in can_read(reader.raw, writer.raw):
                problems.append(f"{reader.file} cannot read {writer.file}: {problem}")
    return problems
