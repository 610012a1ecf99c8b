"""Waiting for the notification hub to finish (for `p95 demo` and the bench): every position event
consumed by the notifications stage, and no row left pending."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from phoenix95.schemas.topics import Topics
from phoenix95.settings import Settings


async def wait_delivered(settings: Settings, timeout: float) -> dict[str, Any]:
    """Wait (up to `timeout` seconds) until the notifications stage has consumed its inputs and sent
    (or given up on) every row; returns the outbox counts by status and type."""
    from phoenix95.connectors.kafka_admin import committed_offsets, end_offsets
    from phoenix95.notify.stage import NotificationStage
    from phoenix95.storage.postgres import Database

    topics = Topics(settings.namespace)
    inputs = [topics.name(base) for base in NotificationStage.inputs if not base.endswith("dlq")]
    bootstrap = settings.kafka.bootstrap_servers
    deadline = time.monotonic() + timeout
    done = False
    async with Database(settings.postgres_url(), schema=settings.postgres.db_schema) as db:
        while time.monotonic() < deadline:
            ends = await end_offsets(bootstrap, inputs)
            committed = await committed_offsets(bootstrap, topics.group("notifications"), inputs)
            caught_up = all(committed.get(tp, 0) >= end for tp, end in ends.items() if end > 0)
            pending = (await db.fetch("SELECT COUNT(*) FROM notifications WHERE status = 'pending'"))[0][0]
            if caught_up and pending == 0:
                done = True
                break
            await asyncio.sleep(0.5)
        by_status = await db.fetch("SELECT status, COUNT(*) FROM notifications GROUP BY status ORDER BY status")
        by_type = await db.fetch(
            "SELECT event_type, COUNT(*) FROM notifications WHERE status = 'sent' GROUP BY event_type ORDER BY 1"
        )
        digested = (await db.fetch("SELECT COUNT(*) FROM notifications WHERE digest_id IS NOT NULL"))[0][0]
    return {
        "delivered": done,
        "by_status": {status: count for status, count in by_status},
        "sent_by_type": {kind: count for kind, count in by_type},
        "digest_lines": digested,
    }
