"""The outbox rows a sink write makes go to the worker's own sender in memory, leased to it in the
table, against real PostgreSQL and an HTTP receiver: each is sent once, a re-delivered event hands
nothing over (its rows are there already), another worker's claim skips the leased rows, a stopping
worker gives back what it still held, and a killed worker's rows are taken over once the lease ran out."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import pytest

from phoenix95.agents.ports import InputRecord
from phoenix95.notify import events as ev
from phoenix95.notify.channels import build_channels
from phoenix95.notify.sender import NotifyMetrics, Sender
from phoenix95.notify.stage import NotificationSink, NotifyOutcome
from phoenix95.notify.store import NotificationStore, row_write
from phoenix95.settings import NotifySettings, get_settings
from phoenix95.storage.postgres import Database, migrate
from tests import notify_samples as s
from tests.notify_receivers import JsonReceiver, Received, mentions

pytestmark = pytest.mark.integration


def _opened(count: int) -> list[NotifyOutcome]:
    """One record per opened position, each with its outbox row for the channel `web`."""
    outcomes = []
    for offset in range(count):
        position_id = str(uuid.uuid4())
        draft = ev.Draft(
            f"evt-{position_id}",
            ev.POSITION_OPENED,
            "info",
            {**s.OPENED, "position_id": position_id},
            position_id=position_id,
        )
        record = InputRecord(
            topic="p95.positions.lifecycle", partition=0, offset=offset, timestamp=None, key=None, value=b""
        )
        outcomes.append(NotifyOutcome(record, writes=[row_write(draft, "web", silent=False)]))
    return outcomes


def _sender(url: str, store: NotificationStore, *, lease_s: float) -> Sender:
    settings = NotifySettings.model_validate(
        {
            "urls": [{"url": url, "name": "web", "per_second": 1000, "per_minute": 60000}],
            "lease_s": lease_s,
            "poll_s": 0.1,
        }
    )
    return Sender(build_channels(settings), store, NotifyMetrics(), settings)


def _run(scenario: Callable[[Database, JsonReceiver], Awaitable[None]]) -> list[Received]:
    """`scenario(db, receiver)` against the migrated test schema and an HTTP receiver; what it received."""
    settings = get_settings()
    receiver = JsonReceiver()

    async def main() -> None:
        await migrate(settings.postgres_url(), settings.postgres.db_schema)
        async with Database(settings.postgres_url(), schema=settings.postgres.db_schema) as db:
            await scenario(db, receiver)

    try:
        asyncio.run(main())
        return list(receiver.requests)
    finally:
        receiver.close()


async def _until(check, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def test_new_rows_are_sent_once_from_memory_and_a_redelivered_event_hands_nothing_over(namespace) -> None:
    async def scenario(db: Database, receiver: JsonReceiver) -> None:
        store = NotificationStore(db)
        sender = _sender(receiver.url, store, lease_s=30)
        sink = NotificationSink(db, on_written=sender.wake, sender=sender)
        claimed = 0
        claim = store.claim

        async def counted_claim(*args, **kwargs):
            nonlocal claimed
            rows = await claim(*args, **kwargs)
            claimed += len(rows)
            return rows

        outcomes = _opened(40)
        sender.start()
        try:
            handed: list[int] = []
            offer = sender.senders[0].offer
            sender.senders[0].offer = lambda rows: (handed.append(len(rows)), offer(rows))  # type: ignore[method-assign]
            assert not await sink.persist("notifications", outcomes)
            assert handed == [40]
            # leased to this worker at insert: another worker's sender finds nothing to take
            assert await NotificationStore(db).claim("web", limit=100, lease_s=5) == []
            store.claim = counted_claim  # type: ignore[method-assign]

            async def all_sent() -> bool:
                return await db.fetch("SELECT count(*) FROM notifications WHERE status = 'sent'") == [(40,)]

            await _until(all_sent, "the 40 rows sent")
            assert not await sink.persist("notifications", outcomes)  # the same records, re-delivered
            assert handed == [40]
            await asyncio.sleep(0.5)  # a sender round or two: nothing more goes out
        finally:
            await sender.stop()
        rows = await db.fetch("SELECT attempts, lease_until IS NULL, sent_at IS NOT NULL FROM notifications")
        assert rows == [(1, True, True)] * 40
        assert claimed == 0  # all sent from memory: no row was claimed back from the table

    requests = _run(scenario)
    seen = mentions([r for r in requests if 200 <= r.status < 300])
    assert len(seen) == 40 and set(seen.values()) == {1}, seen


def test_a_stopping_worker_gives_its_rows_back_and_a_killed_workers_rows_wait_for_the_lease(namespace) -> None:
    async def scenario(db: Database, receiver: JsonReceiver) -> None:
        other_worker = NotificationStore(db)
        stopping = _sender(receiver.url, NotificationStore(db), lease_s=30)
        stopping.start()
        stopping.senders[0].bucket.block(3600)  # its channel backs off: the rows wait in memory
        assert not await NotificationSink(db, sender=stopping).persist("notifications", _opened(3))
        assert len(stopping.senders[0].fresh) == 3
        assert await other_worker.claim("web", limit=100, lease_s=5) == []
        await stopping.stop()  # SIGTERM: what it still held is given back at once
        given_back = await other_worker.claim("web", limit=100, lease_s=5)
        assert len(given_back) == 3
        await other_worker.release([r.notification_id for r in given_back])
        for row in given_back:
            await db.execute(
                "UPDATE notifications SET status = 'sent' WHERE notification_id = %s", (row.notification_id,)
            )

        killed = _sender(receiver.url, NotificationStore(db), lease_s=1.5)
        killed.start()
        killed.senders[0].bucket.block(3600)
        assert not await NotificationSink(db, sender=killed).persist("notifications", _opened(2))
        held = {row.notification_id for _, row in killed.senders[0].fresh}
        assert len(held) == 2
        for task in killed._tasks:  # kill -9: no stop, nothing given back
            task.cancel()
        assert await other_worker.claim("web", limit=100, lease_s=5) == []
        await asyncio.sleep(1.6)  # the lease ran out: the rows are another worker's to send
        assert {r.notification_id for r in await other_worker.claim("web", limit=100, lease_s=5)} == held

    assert _run(scenario) == []  # nothing was sent: the rows only changed hands


def test_an_event_twice_in_one_batch_makes_one_row_and_one_handover(namespace) -> None:
    async def scenario(db: Database, receiver: JsonReceiver) -> None:
        sender = _sender(receiver.url, NotificationStore(db), lease_s=30)
        sender.start()
        sender.senders[0].bucket.block(3600)  # nothing goes out: what was handed over stays in memory
        try:
            (outcome,) = _opened(1)
            assert not await NotificationSink(db, sender=sender).persist("notifications", [outcome, outcome])
            assert len(sender.senders[0].fresh) == 1
            assert await db.fetch("SELECT count(*) FROM notifications") == [(1,)]
        finally:
            await sender.stop()

    _run(scenario)
