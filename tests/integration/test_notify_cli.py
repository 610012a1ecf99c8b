"""`p95 notify test | list | retry` against a real HTTP receiver and PostgreSQL."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

from phoenix95.cli.main import app
from phoenix95.notify import events as ev
from phoenix95.notify.store import NotificationStore, row_write
from phoenix95.settings import get_settings
from phoenix95.storage.postgres import Database, migrate
from tests import notify_samples as s
from tests.notify_receivers import JsonReceiver

pytestmark = pytest.mark.integration


def test_notify_test_reports_each_channel_and_fails_on_a_refusing_one() -> None:
    good = JsonReceiver()
    bad = JsonReceiver(answer=lambda number: (500, {}))
    try:
        result = CliRunner().invoke(app, ["notify", "test", good.url, "--json"])
        assert result.exit_code == 0, result.output
        (report,) = json.loads(result.stdout)
        assert report["ok"] and report["status"] == 200
        assert good.delivered[0].title == "Phoenix95 test notification"
        result = CliRunner().invoke(app, ["notify", "test", bad.url, "--json"])
        assert result.exit_code == 1 and json.loads(result.stdout)[0]["status"] == 500
    finally:
        good.close()
        bad.close()


def test_notify_list_and_retry_work_on_the_outbox(namespace) -> None:
    settings = get_settings()

    async def seed() -> None:
        await migrate(settings.postgres_url(), settings.postgres.db_schema)
        async with Database(settings.postgres_url(), schema=settings.postgres.db_schema) as db:
            draft = ev.Draft("evt-1", ev.POSITION_OPENED, "info", s.OPENED, position_id=s.OPENED["position_id"])
            assert not await db.write([[row_write(draft, "web", silent=False)]])
            store = NotificationStore(db)
            (row,) = await store.claim("web", limit=10, lease_s=5)
            assert await store.failed_attempt([row.notification_id], "HTTP 500", delay_s=0, max_attempts=1) == 1

    asyncio.run(seed())
    result = CliRunner().invoke(app, ["notify", "list", "--status", "failed", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert (
        row["status"] == "failed" and row["last_error"] == "HTTP 500" and row["position_id"] == s.OPENED["position_id"]
    )
    result = CliRunner().invoke(app, ["notify", "retry"])
    assert result.exit_code == 0 and "1 failed notification(s) queued again" in result.output
    result = CliRunner().invoke(app, ["notify", "list", "--status", "pending", "--json"])
    assert [r["attempts"] for r in json.loads(result.stdout)] == [0]
