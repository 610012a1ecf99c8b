"""Real receivers for the notification tests: an HTTP server for Apprise's `json://` scheme and an
SMTP server (aiosmtpd) for `mailto://`, both on free ports of 127.0.0.1, plus a parser that finds
which positions a message (or each digest line) notifies."""

from __future__ import annotations

import email
import email.policy
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@dataclass
class Received:
    at: float
    title: str
    body: str
    status: int


@dataclass
class JsonReceiver:
    """Answers each POST with `answer(request_number)` -> (status, headers); records what it got."""

    answer: Callable[[int], tuple[int, dict[str, str]]] | None = None
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with receiver.lock:
                    number = len(receiver.requests)
                    status, headers = receiver.answer(number) if receiver.answer else (200, {})
                    receiver.requests.append(
                        Received(time.monotonic(), data.get("title", ""), data.get("message", ""), status)
                    )
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.server.server_address[1]}/hook"

    @property
    def delivered(self) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SmtpReceiver:
    """A real SMTP server (aiosmtpd) collecting the mails Apprise sends."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[Received] = []
        #: While set, every mail is refused with a temporary failure (451) and not recorded.
        self.failing = False
        self.refused = 0
        receiver = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                if receiver.failing:
                    receiver.refused += 1
                    return "451 4.3.0 try again later"
                message = email.message_from_bytes(envelope.content, policy=email.policy.default)
                part = message.get_body(preferencelist=("plain", "html"))
                body = part.get_content() if part is not None else ""
                receiver.messages.append(Received(time.monotonic(), str(message["Subject"] or ""), body, 250))
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    @property
    def url(self) -> str:
        return f"mailto://127.0.0.1:{self.port}/trader@example.com?from=p95@example.com&mode=insecure"

    def close(self) -> None:
        self.controller.stop()


def mentions(messages: list[Received]) -> Counter[tuple[str, str]]:
    """(opened|closed, position id) -> how often notified: a message of its own ("Opened ..." /
    "Closed ..." with "Position <id>") or a digest line ("• opened ... · position <id>")."""
    seen: Counter[tuple[str, str]] = Counter()
    for message in messages:
        title = message.title.lower()
        if title.startswith(("opened ", "closed ")):
            match = re.search(rf"Position\W+({_UUID})", message.body)
            if match:
                seen[(title.split()[0], match.group(1))] += 1
            continue
        for line in message.body.splitlines():
            match = re.match(rf"\W*(opened|closed) .*position\W+({_UUID})", line)
            if match:
                seen[(match.group(1), match.group(2))] += 1
    return seen
