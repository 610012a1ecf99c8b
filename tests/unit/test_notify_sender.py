"""The sender's rounds under a flood: digests spaced by `digest_interval_s`, rows that fit the bucket sent
alone at once, and the per-type counting of what was delivered."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from phoenix95.notify import events as ev
from phoenix95.notify.channels import SendResult, build_channels
from phoenix95.notify.sender import ChannelSender, NotifyMetrics
from phoenix95.notify.store import Row
from phoenix95.settings import NotifySettings
from tests import notify_samples as s


def _row(index: int, event_type: str = ev.POSITION_OPENED) -> Row:
    return Row(f"n{index}", f"e{index}", "x", event_type, "info", False, None, None, s.OPENED, 0, 0, datetime.now(UTC))


class ClaimingStore:
    """Hands out the rows of each claim in turn (then none) and records when each claim came."""

    def __init__(self, claims: list[list[Row]]):
        self.claims = list(claims)
        self.claimed_at: list[float] = []
        self.sent_ids: list[list[str]] = []

    async def claim(self, channel: str, *, limit: int, lease_s: float) -> list[Row]:
        self.claimed_at.append(asyncio.get_running_loop().time())
        return self.claims.pop(0) if self.claims else []

    async def sent(self, notification_ids: Any, *, digest_id: str | None = None) -> None:
        self.sent_ids.append(list(notification_ids))

    async def extend(self, notification_ids: Any, lease_s: float) -> None:
        pass

    async def release(self, notification_ids: Any) -> None:
        pass


def _sender(store: ClaimingStore, *, digest_interval_s: float) -> ChannelSender:
    settings = NotifySettings.model_validate({"urls": [{"url": "json://127.0.0.1:9/x", "per_second": 5}]})
    (channel,) = build_channels(settings)
    sender = ChannelSender(
        channel,
        store,  # type: ignore[arg-type]
        NotifyMetrics(),
        max_attempts=3,
        backoff_base_s=1,
        backoff_max_s=2,
        lease_s=5,
        poll_s=0.1,
        timeout_s=1,
        digest_interval_s=digest_interval_s,
    )

    async def send(part: Any, severity: str, silent: bool) -> SendResult:
        return SendResult(ok=True)

    sender._send = send  # type: ignore[method-assign]
    return sender


def test_a_flood_goes_out_as_digests_at_most_one_per_digest_interval() -> None:
    store = ClaimingStore([[_row(i) for i in range(20)], [_row(i) for i in range(20, 40)], [_row(40)]])
    sender = _sender(store, digest_interval_s=0.3)

    async def scenario() -> None:
        for _ in range(4):
            await sender.round()

    asyncio.run(scenario())
    first, second, third, fourth = store.claimed_at
    assert second - first >= 0.29 and third - second >= 0.29  # each after a digest: spaced
    assert fourth - third < 0.2  # the third round sent its one row alone: the flood is over
    assert [len(ids) for ids in store.sent_ids] == [20, 20, 1]
    assert sender.stats["digests"] == 2 and sender.flooded_at is None


def test_rows_that_fit_the_bucket_are_sent_alone_without_waiting() -> None:
    store = ClaimingStore([[_row(1), _row(2)], [_row(3)]])
    sender = _sender(store, digest_interval_s=5.0)

    async def scenario() -> None:
        await sender.round()
        await sender.round()

    asyncio.run(scenario())
    assert store.claimed_at[1] - store.claimed_at[0] < 0.2
    assert store.sent_ids == [["n1"], ["n2"], ["n3"]] and sender.stats["digests"] == 0


def test_delivered_rows_are_counted_per_type() -> None:
    metrics = NotifyMetrics()
    rows = [_row(1), _row(2), _row(3, ev.POSITION_CLOSED)]
    metrics.count("web", rows, "digested")
    assert metrics.total.labels("web", ev.POSITION_OPENED, "digested")._value.get() == 2
    assert metrics.total.labels("web", ev.POSITION_CLOSED, "digested")._value.get() == 1


def test_rows_handed_over_are_sent_without_a_claim_and_those_held_past_half_their_lease_are_left_to_the_table() -> None:
    store = ClaimingStore([])
    sender = _sender(store, digest_interval_s=0.3)  # lease 5 s
    sender.offer([_row(1), _row(2)])
    sender.fresh[0] = (time.monotonic() - 2.6, sender.fresh[0][1])  # held 2.6 s: past half its lease

    async def scenario() -> None:
        sender.claimed_at = time.monotonic()  # the table was asked a moment ago
        assert await sender.round()

    asyncio.run(scenario())
    assert store.sent_ids == [["n2"]] and store.claimed_at == [] and not sender.fresh
