"""The notification hub against the real broker, PostgreSQL, Redis, an SMTP server (aiosmtpd) and an
HTTP receiver (Apprise `json://`): each position open and close notified exactly once per channel,
through a SIGKILL of the notifications worker and an outage of the receiver; 429 / Retry-After
honoured; a flood of closes delivered as digests within the channel's rate limit."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator

import pytest

from phoenix95.domain import ids
from phoenix95.schemas.envelope import utc_now
from phoenix95.schemas.messages import PositionEvent
from phoenix95.streams.stages import STAGES
from tests import factories
from tests.notify_receivers import JsonReceiver, SmtpReceiver, mentions
from tests.pipeline import Pipeline

pytestmark = pytest.mark.integration


def _configure(namespace, monkeypatch, **values: str) -> None:
    for key, value in values.items():
        monkeypatch.setenv(key, value)
        namespace.env[key] = value


@pytest.fixture
def receivers() -> Iterator[tuple[JsonReceiver, SmtpReceiver]]:
    failing = {"on": False}
    web = JsonReceiver(answer=lambda number: (500, {}) if failing["on"] else (200, {}))
    web.failing = failing  # type: ignore[attr-defined]
    smtp = SmtpReceiver()
    try:
        yield web, smtp
    finally:
        web.close()
        smtp.close()


def test_each_open_and_close_is_notified_once_per_channel_through_a_kill_and_an_outage(
    namespace, monkeypatch, receivers, services
):
    web, smtp = receivers
    _configure(
        namespace,
        monkeypatch,
        P95_RISK__CLOCK="event",
        P95_NOTIFY__URLS=json.dumps([{"url": web.url, "name": "web"}, {"url": smtp.url, "name": "mail"}]),
        P95_NOTIFY__BACKOFF_BASE_S="0.5",
        P95_NOTIFY__BACKOFF_MAX_S="2",
        P95_NOTIFY__LEASE_S="3",
        P95_NOTIFY__MAX_ATTEMPTS="100",  # the outage outlasts the restart: no row may give up
        P95_METRICS__SYSTEM_INTERVAL_S="1",
    )
    pipeline = Pipeline(namespace, stages=(*STAGES, "notifications"))
    _, _signals, timeline = factories.candle_session(namespace.name, signals=24, prices=420)
    third = len(timeline) // 3
    pipeline.start()
    try:
        began = time.monotonic()
        phases: dict[str, float] = {}

        async def run() -> dict[str, int]:
            await pipeline.publish(timeline[:third])

            async def some_notified(db) -> bool:
                return bool(mentions(web.delivered))

            await pipeline.wait_for(some_notified, what="a first position notification")
            phases["a first position notification"] = round(time.monotonic() - began, 1)
            # The receiver goes down (500), then the worker is killed while its sends are refused: a send
            # the channel accepted in the instant before a kill, its row not yet marked sent, would go
            # again (the one at-least-once window: no channel says whether it saw a message before).
            web.failing["on"] = smtp.failing = True
            refused, mail_refused = len(web.requests), smtp.refused
            await pipeline.publish(timeline[third : 2 * third])  # rows both channels now refuse

            async def outage_seen(db) -> bool:
                web_refused = len([r for r in web.requests[refused:] if r.status == 500])
                return web_refused >= 2 and smtp.refused > mail_refused

            await pipeline.wait_for(outage_seen, what="sends refused by the receiver")
            phases["sends refused by the receiver"] = round(time.monotonic() - began, 1)
            pipeline.workers.kill("notifications", signal.SIGKILL)
            await pipeline.publish(timeline[2 * third :])
            pipeline.workers.start("notifications")
            refused, mail_refused = len(web.requests), smtp.refused
            await pipeline.wait_for(outage_seen, what="sends of the restarted worker refused")
            phases["sends of the restarted worker refused"] = round(time.monotonic() - began, 1)
            web.failing["on"] = smtp.failing = False

            async def delivered(db) -> bool:
                if not await pipeline.caught_up(("positions", "notifications")):
                    return False
                opened = await pipeline.count(db, "SELECT COUNT(*) FROM positions")
                closed = await pipeline.count(db, "SELECT COUNT(*) FROM positions WHERE status <> 'open'")
                pending = await pipeline.count(
                    db,
                    "SELECT COUNT(*) FROM notifications WHERE status <> 'sent' "
                    "AND event_type IN ('position_opened', 'position_closed')",
                )
                rows = await pipeline.count(
                    db, "SELECT COUNT(*) FROM notifications WHERE event_type IN ('position_opened', 'position_closed')"
                )
                return opened > 0 and closed > 0 and pending == 0 and rows == 2 * (opened + closed)

            await pipeline.wait_for(delivered, timeout=120, what="every open and close notified on both channels")
            phases["every open and close notified on both channels"] = round(time.monotonic() - began, 1)
            async with pipeline.database() as db:
                positions = await db.fetch("SELECT position_id::text, status FROM positions")
                retried = await pipeline.count(db, "SELECT COALESCE(SUM(attempts - 1), 0) FROM notifications")
                digested = await pipeline.count(db, "SELECT COUNT(*) FROM notifications WHERE digest_id IS NOT NULL")
            expected = {("opened", pid) for pid, _ in positions} | {
                ("closed", pid) for pid, status in positions if status != "open"
            }
            counts = {"events": len(expected), "retries": retried, "digest_lines": digested}
            for name, messages in (("web", web.delivered), ("mail", smtp.messages)):
                seen = mentions(messages)
                assert set(seen) == expected, f"{name}: missing {expected - set(seen)}, extra {set(seen) - expected}"
                duplicates = {key: n for key, n in seen.items() if n > 1}
                assert not duplicates, f"{name}: notified more than once: {duplicates}"
                counts[f"{name}_messages"] = len(messages)
            assert retried > 0  # the outage was retried through, not skipped
            return counts

        counts = asyncio.run(run())
        print("notification counts:", counts, "phases (s):", phases)
    finally:
        pipeline.stop()


def _closed_event(namespace: str, index: int) -> PositionEvent:
    position_id = ids.derive("test-position", namespace, index)
    return factories.position_event(
        "closed",
        position_id=position_id,
        close_reason="take_profit",
        at=utc_now(),
        event_id=ids.derive("test-close", position_id),
    )


def test_a_flood_of_closes_goes_out_as_digests_within_the_rate_limit_and_429_is_honoured(namespace, monkeypatch):
    retry_after = 2.0
    web = JsonReceiver(answer=lambda number: (429, {"Retry-After": f"{retry_after:.0f}"}) if number == 0 else (200, {}))
    _configure(
        namespace,
        monkeypatch,
        P95_NOTIFY__URLS=json.dumps([{"url": web.url, "name": "web", "per_second": 1, "per_minute": 6}]),
        P95_NOTIFY__TYPES=json.dumps({"worker": "off"}),
    )
    pipeline = Pipeline(namespace, stages=("notifications",))
    events = [_closed_event(namespace.name, i) for i in range(500)]
    pipeline.start()
    try:

        async def run() -> None:
            await pipeline.publish(events)

            async def all_sent(db) -> bool:
                return await pipeline.count(db, "SELECT COUNT(*) FROM notifications WHERE status = 'sent'") == 500

            await pipeline.wait_for(all_sent, timeout=90, what="500 closes delivered")

        asyncio.run(run())
        delivered = web.delivered
        seen = mentions(delivered)
        assert set(seen) == {("closed", e.position_id) for e in events}
        assert max(seen.values()) == 1
        assert len(delivered) < 20  # digests, not 500 messages
        assert any("positions closed" in m.title for m in delivered)
        # 429: nothing was sent again before its Retry-After
        assert web.requests[0].status == 429
        assert web.requests[1].at - web.requests[0].at >= retry_after - 0.1
        # the bucket: at most 1 message a second and 6 a minute (one burst of 6 allowed at the start)
        times = [r.at for r in web.requests]
        for i, at in enumerate(times):
            assert len([t for t in times[i:] if t - at < 60]) <= 6 + 1  # +1: the refused 429 request
        print("flood:", len(delivered), "messages for 500 closes:", [m.title for m in delivered])
    finally:
        pipeline.stop()
        web.close()
