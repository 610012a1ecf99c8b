"""A minimal Confluent-compatible schema registry over real HTTP on 127.0.0.1 (register a schema,
fetch one by id): enough for the codec's Confluent framing, for tests."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@contextmanager
def serve_registry() -> Iterator[str]:
    schemas: dict[int, str] = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # POST /subjects/{subject}/versions
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                schema_id = next((i for i, text in schemas.items() if text == body["schema"]), len(schemas) + 1)
                schemas[schema_id] = body["schema"]
            self._answer(200, {"id": schema_id})

        def do_GET(self) -> None:  # GET /schemas/ids/{id}
            schema_id = int(self.path.rsplit("/", 1)[1])
            with lock:
                text = schemas.get(schema_id)
            if text is not None:
                self._answer(200, {"schema": text})
            else:
                self._answer(404, {"error_code": 40403, "message": "Schema not found"})

        def _answer(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
