"""A minimal Confluent-compatible schema registry over real HTTP on 127.0.0.1 (register a schema,
fetch one by id): enough for the codec's Confluent framing, for tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.http_stub import serve_json


@contextmanager
def serve_registry() -> Iterator[str]:
    schemas: dict[int, str] = {}

    def respond(method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "POST":  # POST /subjects/{subject}/versions
            schema_id = next((i for i, text in schemas.items() if text == body["schema"]), len(schemas) + 1)
            schemas[schema_id] = body["schema"]
            return 200, {"id": schema_id}
        schema_id = int(path.rsplit("/", 1)[1])  # GET /schemas/ids/{id}
        if schema_id in schemas:
            return 200, {"schema": schemas[schema_id]}
        return 404, {"error_code": 40403, "message": "Schema not found"}

    with serve_json(respond) as url:
        yield url
