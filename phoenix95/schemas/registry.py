"""The Avro schemas shipped with Phoenix95, their fingerprints, and an optional schema-registry client.

Schemas live in `schemas/avro/<name>.v<N>.avsc`; every version ever released stays there. Models
mirror the newest version of each; readers resolve older writers' data with Avro schema resolution.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import fastavro
import httpx

_FILE_PATTERN = re.compile(r"^(?P<stem>[a-z_]+)\.v(?P<version>\d+)\.avsc$")
_EMPTY64 = 0xC15D213AA4D7A795


@dataclass(frozen=True)
class SchemaVersion:
    name: str
    version: int
    file: str
    raw: dict[str, Any]
    parsed: Any
    canonical: str
    fingerprint: int

    @property
    def fingerprint_bytes(self) -> bytes:
        """Avro single-object encoding puts the CRC-64-AVRO fingerprint little-endian."""
        return self.fingerprint.to_bytes(8, "little")


def _fingerprint_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY64 & -(fp & 1))
        table.append(fp)
    return table


_FP_TABLE = _fingerprint_table()


def rabin_fingerprint(data: bytes) -> int:
    """CRC-64-AVRO (Rabin) fingerprint, as in the Avro specification."""
    fp = _EMPTY64
    for byte in data:
        fp = (fp >> 8) ^ _FP_TABLE[(fp ^ byte) & 0xFF]
    return fp


def load_version(file: str, text: str) -> SchemaVersion:
    match = _FILE_PATTERN.match(file)
    if match is None:
        raise ValueError(f"schema file {file!r} is not named <name>.v<N>.avsc")
    raw = json.loads(text)
    parsed = fastavro.parse_schema(raw, _force=True)
    canonical = fastavro.schema.to_parsing_canonical_form(raw)
    return SchemaVersion(
        name=f"{raw.get('namespace', '')}.{raw['name']}".lstrip("."),
        version=int(match["version"]),
        file=file,
        raw=raw,
        parsed=parsed,
        canonical=canonical,
        fingerprint=rabin_fingerprint(canonical.encode()),
    )


class SchemaSet:
    """All versions of all schemas, indexed by name, version and fingerprint."""

    def __init__(self, versions: list[SchemaVersion]):
        self._by_name: dict[str, list[SchemaVersion]] = {}
        self._by_fingerprint: dict[int, SchemaVersion] = {}
        for version in sorted(versions, key=lambda v: (v.name, v.version)):
            self._by_name.setdefault(version.name, []).append(version)
            self._by_fingerprint.setdefault(version.fingerprint, version)

    def __iter__(self) -> Iterator[SchemaVersion]:
        for versions in self._by_name.values():
            yield from versions

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def versions(self, name: str) -> list[SchemaVersion]:
        return list(self._by_name[name])

    def latest(self, name: str) -> SchemaVersion:
        return self._by_name[name][-1]

    def by_fingerprint(self, fingerprint: int) -> SchemaVersion | None:
        return self._by_fingerprint.get(fingerprint)

    def by_canonical(self, canonical: str) -> SchemaVersion | None:
        return self._by_fingerprint.get(rabin_fingerprint(canonical.encode()))


@cache
def bundled_schemas() -> SchemaSet:
    folder = resources.files("phoenix95.schemas").joinpath("avro")
    versions = [
        load_version(entry.name, entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".avsc")
    ]
    return SchemaSet(versions)


class SchemaRegistryError(RuntimeError):
    pass


class SchemaRegistryClient:
    """Confluent/Karapace-compatible REST client (subjects follow RecordNameStrategy)."""

    def __init__(self, url: str, *, timeout: float = 5.0):
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout)
        self._ids: dict[str, int] = {}
        self._schemas: dict[int, str] = {}

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        text = json.dumps(schema, separators=(",", ":"))
        cached = self._ids.get(subject + text)
        if cached is not None:
            return cached
        try:
            response = self._http.post(
                f"/subjects/{subject}/versions",
                json={"schema": text, "schemaType": "AVRO"},
                headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
            )
            response.raise_for_status()
        except httpx.HTTPError as error:
            raise SchemaRegistryError(f"registering {subject} at {self.url} failed: {error}") from error
        schema_id = int(response.json()["id"])
        self._ids[subject + text] = schema_id
        self._schemas[schema_id] = text
        return schema_id

    def schema(self, schema_id: int) -> str:
        cached = self._schemas.get(schema_id)
        if cached is not None:
            return cached
        try:
            response = self._http.get(f"/schemas/ids/{schema_id}")
            response.raise_for_status()
        except httpx.HTTPError as error:
            raise SchemaRegistryError(f"schema id {schema_id} not found at {self.url}: {error}") from error
        text = str(response.json()["schema"])
        self._schemas[schema_id] = text
        return text

    def close(self) -> None:
        self._http.close()
