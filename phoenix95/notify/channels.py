"""Channels: Apprise URLs with their limits, routing of events to them, and the synchronous send.

Apprise speaks Telegram, Discord, Slack, email, ntfy, JSON webhooks and ~100 more, synchronously: the
sender runs each channel's sends in that channel's own thread, so a slow or dead channel never holds
up the event loop or another channel. Apprise's `notify()` answers True/False only; to honour 429 /
Retry-After the HTTP responses a send receives are recorded per thread (`ResponseLog`).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from phoenix95.notify import events as ev
from phoenix95.notify.masking import mask_url, quiet_apprise

if TYPE_CHECKING:
    from phoenix95.settings import NotifySettings

#: Default limits by Apprise plugin: (messages per second, per minute). Telegram's own limits for a
#: chat; looser but still bounded for webhooks and email.
DEFAULT_LIMITS: dict[str, tuple[float, float]] = {
    "NotifyTelegram": (1.0, 20.0),
    "NotifyDiscord": (1.0, 30.0),
    "NotifySlack": (1.0, 60.0),
    "NotifyNtfy": (1.0, 30.0),
    "NotifyEmail": (1.0, 30.0),
    "NotifyJSON": (10.0, 300.0),
    "NotifyForm": (10.0, 300.0),
    "NotifyXML": (10.0, 300.0),
}
FALLBACK_LIMITS = (1.0, 30.0)
#: Plugins that render Markdown; the others get plain text.
MARKDOWN_PLUGINS = frozenset(
    {"NotifyTelegram", "NotifyDiscord", "NotifySlack", "NotifyMatrix", "NotifyMattermost", "NotifyRocketChat"}
)
_NAME = re.compile(r"[^A-Za-z0-9_.:-]+")


class ConfigError(ValueError):
    """A notification URL or rule that cannot work (one line naming the entry)."""


class TokenBucket:
    """Two buckets (per second and per minute); a message takes one token of each."""

    def __init__(self, per_second: float, per_minute: float, clock: Any = time.monotonic):
        self.clock = clock
        self.rates = (per_second, per_minute / 60.0)
        self.capacity = (max(1.0, per_second), max(1.0, per_minute))
        self.tokens = list(self.capacity)
        self.updated = clock()
        #: Nothing is sent before this (a 429's Retry-After, a channel backing off).
        self.blocked_until = 0.0

    def _refill(self) -> None:
        now = self.clock()
        elapsed = max(0.0, now - self.updated)
        self.updated = now
        for i in (0, 1):
            self.tokens[i] = min(self.capacity[i], self.tokens[i] + elapsed * self.rates[i])

    def available(self) -> int:
        """Whole messages that could go out now."""
        self._refill()
        if self.clock() < self.blocked_until:
            return 0
        return int(min(self.tokens))

    def wait_time(self) -> float:
        """Seconds until one message may go out."""
        self._refill()
        now = self.clock()
        waits = [max(0.0, self.blocked_until - now)]
        for i in (0, 1):
            if self.tokens[i] < 1:
                waits.append((1 - self.tokens[i]) / self.rates[i])
        return max(waits)

    def take(self) -> None:
        self._refill()
        self.tokens = [t - 1 for t in self.tokens]

    def block(self, seconds: float) -> None:
        self.blocked_until = max(self.blocked_until, self.clock() + seconds)


@dataclass
class Channel:
    name: str
    url: str = field(repr=False)
    plugin_name: str
    tags: frozenset[str]
    per_second: float
    per_minute: float
    body_maxlen: int
    title_in_body: bool
    markdown: bool

    @property
    def masked(self) -> str:
        return mask_url(self.url)

    def plugin(self, timeout_s: float = 4.0) -> Any:
        import apprise

        with quiet_apprise():
            plugin = apprise.Apprise.instantiate(self.url, suppress_exceptions=True)
        if plugin is None:  # checked at start; the URL did not change
            raise ConfigError(f"channel {self.name}: Apprise cannot load its URL")
        for attribute in ("socket_connect_timeout", "socket_read_timeout"):
            if hasattr(plugin, attribute):
                setattr(plugin, attribute, timeout_s)
        return plugin


def load_channel(
    index: int,
    url: str,
    *,
    tags: Sequence[str] = (),
    name: str | None = None,
    per_second: float | None = None,
    per_minute: float | None = None,
) -> Channel:
    import apprise

    label = name or f"#{index + 1}"
    if "://" not in url:
        raise ConfigError(f"notify URL {label} ({mask_url(url)}): not a URL (expected scheme://...)")
    try:
        with quiet_apprise():
            plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
    except Exception as error:
        raise ConfigError(f"notify URL {label} ({mask_url(url)}): {error}") from None
    if plugin is None:
        raise ConfigError(
            f"notify URL {label} ({mask_url(url)}): Apprise cannot load it (unknown scheme or missing token/target)"
        )
    kind = type(plugin).__name__
    default_second, default_minute = DEFAULT_LIMITS.get(kind, FALLBACK_LIMITS)
    scheme = url.split("://", 1)[0].lower()
    channel_name = name or f"{scheme}-{hashlib.sha1(url.encode()).hexdigest()[:8]}"
    return Channel(
        name=_NAME.sub("-", channel_name)[:40],
        url=url,
        plugin_name=kind,
        tags=frozenset(tags),
        per_second=per_second or default_second,
        per_minute=per_minute or default_minute,
        body_maxlen=int(getattr(plugin, "body_maxlen", 32768) or 32768),
        title_in_body=not getattr(plugin, "title_maxlen", 250),
        markdown=kind in MARKDOWN_PLUGINS,
    )


def build_channels(settings: NotifySettings) -> list[Channel]:
    """The configured channels; raises ConfigError naming the first bad URL or rule."""
    channels: list[Channel] = []
    for index, entry in enumerate(settings.urls):
        channel = load_channel(
            index,
            entry.url.get_secret_value(),
            tags=entry.tags,
            name=entry.name,
            per_second=entry.per_second,
            per_minute=entry.per_minute,
        )
        if any(c.name == channel.name for c in channels):
            raise ConfigError(f"notify URL #{index + 1} ({channel.masked}): duplicate channel name {channel.name}")
        channels.append(channel)
    known_tags = {tag for c in channels for tag in c.tags}
    for index, rule in enumerate(settings.rules):
        unknown = [t for t in rule.types if t != "*" and t not in ev.EVENT_TYPES]
        if unknown:
            raise ConfigError(
                f"notify rule #{index + 1}: unknown event type {unknown[0]!r} (known: {', '.join(ev.EVENT_TYPES)})"
            )
        if not rule.tags:
            raise ConfigError(f"notify rule #{index + 1}: no tags (a rule routes events to the URLs with its tags)")
        missing = [t for t in rule.tags if t not in known_tags]
        if missing:
            raise ConfigError(f"notify rule #{index + 1}: tag {missing[0]!r} is on no notify URL")
    for kind in settings.types:
        if kind not in ev.EVENT_TYPES:
            raise ConfigError(f"notify types: unknown event type {kind!r} (known: {', '.join(ev.EVENT_TYPES)})")
    return channels


class Router:
    """Event type + severity -> the channels it goes to, and whether it goes at all (on/silent/off).

    An event goes to every untagged URL, and to the tagged URLs whose tags a matching rule names. With
    no rules, to every URL."""

    def __init__(self, settings: NotifySettings, channels: Sequence[Channel]):
        self.channels = list(channels)
        self.rules = list(settings.rules)
        self.modes: dict[str, ev.Mode] = {**ev.DEFAULT_MODES, **settings.types}
        self._wanted: dict[str, bool] = {}

    def mode(self, kind: str) -> ev.Mode:
        return self.modes.get(kind, "on")

    def wanted(self, kind: str) -> bool:
        """Whether an event of this type goes anywhere at any severity (the stage does not decode the
        events of an unwanted type)."""
        known = self._wanted.get(kind)
        if known is None:
            known = self._wanted[kind] = bool(self.route(kind, "critical"))
        return known

    def route(self, kind: str, severity: str) -> list[Channel]:
        if self.mode(kind) == "off":
            return []
        if not self.rules:
            return list(self.channels)
        tags: set[str] = set()
        for rule in self.rules:
            if ("*" in rule.types or kind in rule.types) and ev.SEVERITY_RANK[severity] >= ev.SEVERITY_RANK[
                rule.min_severity
            ]:
                tags.update(rule.tags)
        return [c for c in self.channels if not c.tags or c.tags & tags]


# -- sending ---------------------------------------------------------------------------------------


@dataclass
class SendResult:
    ok: bool
    #: Seconds the channel asked us to wait (429 / Retry-After), if it did.
    retry_after: float | None = None
    status: int | None = None
    error: str | None = None


class ResponseLog:
    """Records, per thread, the HTTP status and Retry-After of the responses `requests` received,
    so a send that Apprise reports as failed can tell a 429 (and how long to wait) from a 500."""

    _local = threading.local()
    _lock = threading.Lock()

    @classmethod
    def install(cls) -> None:
        from requests.adapters import HTTPAdapter

        with cls._lock:
            if getattr(HTTPAdapter.send, "_p95_response_log", False):
                return
            original = HTTPAdapter.send

            def send(adapter: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
                response = original(adapter, request, *args, **kwargs)
                log = getattr(cls._local, "responses", None)
                if log is not None:
                    log.append((response.status_code, _retry_after(response)))
                return response

            send._p95_response_log = True  # type: ignore[attr-defined]
            HTTPAdapter.send = send  # type: ignore[method-assign,assignment]

    @classmethod
    def start(cls) -> None:
        cls._local.responses = []

    @classmethod
    def take(cls) -> list[tuple[int, float | None]]:
        responses = getattr(cls._local, "responses", None) or []
        cls._local.responses = None
        return responses


def _retry_after(response: Any) -> float | None:
    value = response.headers.get("Retry-After")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                return None
    if response.status_code == 429:
        try:  # Telegram: {"parameters": {"retry_after": 5}}
            return float(response.json()["parameters"]["retry_after"])
        except Exception:
            return None
    return None


class LogCapture:
    """The last error Apprise logged in this thread (for the row's last_error)."""

    def __init__(self) -> None:
        import logging

        self.messages: list[str] = []
        self._thread = threading.get_ident()
        outer = self

        class Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if record.thread == outer._thread and record.levelno >= logging.WARNING:
                    outer.messages.append(record.getMessage())

        self.handler = Handler()

    def __enter__(self) -> LogCapture:
        import logging

        logging.getLogger("apprise").addHandler(self.handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        import logging

        logging.getLogger("apprise").removeHandler(self.handler)


def send_sync(plugin: Any, title: str, body: str, *, markdown: bool, severity: str, silent: bool) -> SendResult:
    """One Apprise send, in the calling (channel) thread."""
    from apprise import NotifyFormat, NotifyType

    notify_type = {"info": NotifyType.INFO, "warning": NotifyType.WARNING, "critical": NotifyType.FAILURE}.get(
        severity, NotifyType.INFO
    )
    if hasattr(plugin, "silent"):
        plugin.silent = silent  # Telegram: delivered without a sound
    ResponseLog.install()
    ResponseLog.start()
    with LogCapture() as logs:
        try:
            ok = bool(
                plugin.notify(
                    body=body,
                    title=title,
                    notify_type=notify_type,
                    body_format=NotifyFormat.MARKDOWN if markdown else NotifyFormat.TEXT,
                )
            )
            error = None
        except Exception as exc:  # a plugin bug must not kill the sender
            ok, error = False, f"{type(exc).__name__}: {exc}"
    responses = ResponseLog.take()
    status = responses[-1][0] if responses else None
    retry_after = next((after for code, after in reversed(responses) if code == 429 or after is not None), None)
    if any(code == 429 for code, _ in responses) and retry_after is None:
        retry_after = 1.0
    if not ok and error is None:
        error = (logs.messages[-1] if logs.messages else "the channel refused the message")[:500]
    return SendResult(ok=ok, retry_after=retry_after if not ok else None, status=status, error=error)
