"""Outbox retention: the notifications stage deletes sent rows older than `notify.retention_days`
(failed and pending rows, and recent sent ones, stay), on its clock, and not again before
`retention_interval_s`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from phoenix95.notify import events as ev
from phoenix95.notify.channels import Router, build_channels
from phoenix95.notify.stage import NotificationStage
from phoenix95.notify.store import NotificationStore, row_write
from phoenix95.schemas.codec import Codec
from phoenix95.settings import NotifySettings, get_settings
from phoenix95.storage.postgres import Database, migrate
from tests import notify_samples as s

pytestmark = pytest.mark.integration

SETTINGS = NotifySettings.model_validate({"urls": [{"url": "json://127.0.0.1:9/a", "name": "web"}]})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sent_rows_older_than_the_retention_are_deleted_and_failed_pending_and_recent_rows_stay(namespace) -> None:
    settings = get_settings()

    async def scenario() -> None:
        await migrate(settings.postgres_url(), settings.postgres.db_schema)
        async with Database(settings.postgres_url(), schema=settings.postgres.db_schema) as db:
            store = NotificationStore(db)
            names = ("old-sent", "old-failed", "old-pending", "new-sent")
            drafts = [ev.Draft(name, ev.POSITION_OPENED, "info", s.OPENED) for name in names]
            assert not await db.write([[row_write(d, "web", silent=False)] for d in drafts])
            rows = {r.event_id: r.notification_id for r in await store.claim("web", limit=10, lease_s=5)}
            await store.sent([rows["old-sent"], rows["new-sent"]])
            await store.failed_attempt([rows["old-failed"]], "HTTP 500", delay_s=0, max_attempts=1)
            await store.release([rows["old-pending"]])
            await db.execute(
                "UPDATE notifications SET created_at = created_at - interval '31 days', "
                "sent_at = sent_at - interval '31 days' WHERE event_id LIKE 'old-%'"
            )
            clock = Clock()
            stage = NotificationStage(
                Codec(),
                Router(SETTINGS, build_channels(SETTINGS)),
                store,
                retention_days=30,
                retention_interval_s=3600,
                clock=clock,
            )
            await stage.on_clock(datetime.now(UTC))
            left = {
                event_id: status for event_id, status in await db.fetch("SELECT event_id, status FROM notifications")
            }
            assert left == {"old-failed": "failed", "old-pending": "pending", "new-sent": "sent"}

            # not again before the interval: a row that became old meanwhile waits for the next purge
            await db.execute("UPDATE notifications SET created_at = created_at - interval '31 days'")
            clock.now += 60
            await stage.on_clock(datetime.now(UTC))
            assert (await db.fetch("SELECT count(*) FROM notifications WHERE status = 'sent'"))[0][0] == 1
            clock.now += 3600
            await stage.on_clock(datetime.now(UTC))
            statuses = sorted(status for (status,) in await db.fetch("SELECT status FROM notifications"))
            assert statuses == ["failed", "pending"]

    asyncio.run(scenario())
