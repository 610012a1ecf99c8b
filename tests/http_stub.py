"""A JSON-over-HTTP stand-in on 127.0.0.1 for tests: `respond(method, path, body)` returns
(status, payload); payload None sends an empty body."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Respond = Callable[[str, str, Any], tuple[int, Any]]


@contextmanager
def serve_json(respond: Respond, *, headers: Mapping[str, str] | None = None) -> Iterator[str]:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._handle("GET", None)

        def do_POST(self) -> None:
            self._handle("POST", json.loads(self.rfile.read(int(self.headers["Content-Length"]))))

        def _handle(self, method: str, body: Any) -> None:
            with lock:
                status, payload = respond(method, self.path, body)
            data = json.dumps(payload).encode() if payload is not None else b""
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
