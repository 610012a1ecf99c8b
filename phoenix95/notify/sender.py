"""Delivers the `notifications` outbox: one task and one thread per channel, a token bucket each.

Per channel, in a loop: take the due pending rows (a lease, so a second sender skips them and a killed
sender's rows come back); if the bucket lets them all out now, send each alone; otherwise wait for a
token and send them all as one digest (split on line boundaries into as many messages as the channel's
length limit needs), so a flood is bounded by the rate limit and nothing is dropped. While a flood
lasts (the last round sent a digest), rounds are at least `digest_interval_s` apart: each digest takes
what came in meanwhile, so a flood costs a claim, a send and a mark per interval, not per token. A failed send is
counted on its rows and retried with capped exponential backoff (or after the channel's Retry-After);
after `max_attempts` the rows are failed (`p95 notify retry`). The channel backs off as a whole while
it fails, and only it: the consume loop and the other channels go on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from phoenix95.domain import ids
from phoenix95.notify import templates
from phoenix95.notify.channels import Channel, SendResult, TokenBucket, send_sync
from phoenix95.notify.store import NotificationStore, Row

logger = logging.getLogger(__name__)

#: Rows taken per round; a larger backlog goes out over several digests.
CLAIM_LIMIT = 500


class NotifyMetrics:
    """`p95_notifications_total{channel,type,outcome}` and the send latency."""

    def __init__(self, registry: Any = None):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = registry if registry is not None else CollectorRegistry()
        self.total = Counter(
            "p95_notifications_total",
            "Notifications by channel, event type and outcome (sent, digested, retried, failed, template_error)",
            ["channel", "type", "outcome"],
            registry=self.registry,
        )
        self.send_seconds = Histogram(
            "p95_notification_send_seconds",
            "Duration of one send to a channel (the Apprise call)",
            ["channel"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.delivery_seconds = Histogram(
            "p95_notification_delivery_seconds",
            "From the outbox row's creation to its delivery",
            ["channel"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
            registry=self.registry,
        )

    def count(self, channel: str, rows: Sequence[Row], outcome: str) -> None:
        for event_type, count in Counter(row.event_type for row in rows).items():
            self.total.labels(channel, event_type, outcome).inc(count)


class ChannelSender:
    def __init__(
        self,
        channel: Channel,
        store: NotificationStore,
        metrics: NotifyMetrics,
        *,
        max_attempts: int,
        backoff_base_s: float,
        backoff_max_s: float,
        lease_s: float,
        poll_s: float,
        timeout_s: float,
        digest_interval_s: float = 0.0,
    ):
        self.channel = channel
        self.store = store
        self.metrics = metrics
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.digest_interval_s = digest_interval_s
        #: When the last digest went out (None: the last round sent its rows alone, or found none).
        self.flooded_at: float | None = None
        self.bucket = TokenBucket(channel.per_second, channel.per_minute)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"p95-notify-{channel.name}")
        self.wake = asyncio.Event()
        #: Rows the stage inserted leased to this worker, handed over in memory (`offer`), with when.
        self.fresh: collections.deque[tuple[float, Row]] = collections.deque()
        #: When the table was last asked for due rows (retries, rows of a killed worker).
        self.claimed_at = float("-inf")
        self._plugin: Any = None
        #: Consecutive failed sends (the channel's own backoff).
        self.failures = 0
        self.last_batch_at = time.monotonic()
        self.stats = {"messages": 0, "rows": 0, "digests": 0, "retries": 0, "failed": 0}

    def backoff(self, attempts: int) -> float:
        delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** max(0, attempts - 1))
        return delay * (0.8 + 0.4 * random.random())

    async def run(self) -> None:
        while True:
            # cleared before the claim, not after it: a write that wakes us while we claim (too early
            # to be seen) leaves the event set, and the next round starts at once instead of a poll later
            self.wake.clear()
            try:
                worked = await self.round()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # PostgreSQL away: the rows wait in the table
                logger.warning("notify %s: %s; retrying", self.channel.name, error)
                worked = False
                await asyncio.sleep(1.0)
            if not worked:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self.poll_s)

    async def round(self) -> bool:
        wait = self.bucket.wait_time()
        if self.flooded_at is not None:
            wait = max(wait, self.flooded_at + self.digest_interval_s - time.monotonic())
        if wait > 0:
            await asyncio.sleep(wait)
        rows = self.take_fresh()
        if not rows or time.monotonic() - self.claimed_at >= max(self.poll_s, 1.0):
            self.claimed_at = time.monotonic()
            claimed = await self.store.claim(self.channel.name, limit=CLAIM_LIMIT, lease_s=self.lease_s)
            if claimed:
                rows = sorted([*rows, *claimed], key=lambda r: (r.created_at, r.notification_id))
        if not rows:
            self.flooded_at = None
            return False
        window = max(1.0, time.monotonic() - self.last_batch_at)
        self.last_batch_at = time.monotonic()
        available = self.bucket.available()
        if (len(rows) <= available and all(r.parts_sent == 0 for r in rows)) or len(rows) == 1:
            for index, row in enumerate(rows):
                if not await self.send_alone(row):
                    await self.store.release([r.notification_id for r in rows[index + 1 :]])
                    break
            self.flooded_at = None
        else:
            await self.send_digest(rows, window)
            self.flooded_at = time.monotonic()
        return True

    def offer(self, rows: Sequence[Row]) -> None:
        """Rows just inserted leased to this worker (by the stage's sink, after its commit)."""
        now = time.monotonic()
        self.fresh.extend((now, row) for row in rows)
        self.wake.set()

    def take_fresh(self) -> list[Row]:
        """Up to `CLAIM_LIMIT` rows handed over in memory, oldest first. A row held past half its lease
        (the channel was backing off) is left to the table: it is claimed from there once its lease
        ran out, so no other sender can be sending it while this one does."""
        rows: list[Row] = []
        fresh_after = time.monotonic() - self.lease_s / 2
        while self.fresh and len(rows) < CLAIM_LIMIT:
            at, row = self.fresh.popleft()
            if at >= fresh_after:
                rows.append(row)
        return rows

    # -- one message ---------------------------------------------------------------------------

    async def send_alone(self, row: Row) -> bool:
        try:
            rendered = templates.render(row.event_type, row.payload, markdown=self.channel.markdown)
        except templates.TemplateError as error:
            logger.error(
                "notify %s: template for %s %s failed: %s", self.channel.name, row.event_type, row.event_id, error
            )
            await self.store.fail_now(row.notification_id, f"template: {error}")
            self.metrics.count(self.channel.name, [row], "template_error")
            self.stats["failed"] += 1
            return True
        parts = templates.split(rendered, self.channel.body_maxlen, title_in_body=self.channel.title_in_body)
        for number, part in enumerate(parts, 1):
            if number <= row.parts_sent:
                continue  # sent before a failure of a later part
            await self._wait_token()
            result = await self._send(part, row.severity, row.silent)
            if not result.ok:
                await self._failed([row], result)
                return False
            if len(parts) > 1 and number < len(parts):
                await self.store.part_sent(row.notification_id, number)
        await self.store.sent([row.notification_id])
        self._delivered([row], "sent")
        return True

    # -- digests -------------------------------------------------------------------------------

    async def send_digest(self, rows: Sequence[Row], window_s: float) -> None:
        md = self.channel.markdown
        lines: list[str] = []
        good: list[Row] = []
        for row in rows:
            try:
                lines.append(templates.digest_line(row.event_type, row.payload, markdown=md))
                good.append(row)
            except templates.TemplateError as error:
                await self.store.fail_now(row.notification_id, f"template: {error}")
                self.metrics.count(self.channel.name, [row], "template_error")
                self.stats["failed"] += 1
        header = 120 + (120 if self.channel.title_in_body else 0)
        groups = templates.split_lines(lines, self.channel.body_maxlen, header=header)
        for number, group in enumerate(groups, 1):
            part_rows = [good[i] for i in group]
            part = templates.digest(
                [lines[i] for i in group], [r.event_type for r in part_rows], markdown=md, window_s=window_s
            )
            if len(groups) > 1:
                part = templates.Rendered(f"{part.title} ({number}/{len(groups)})", part.body, md)
            severity = max((r.severity for r in part_rows), key=lambda s: {"info": 0, "warning": 1, "critical": 2}[s])
            silent = all(r.silent for r in part_rows)
            pieces = templates.split(part, self.channel.body_maxlen, title_in_body=self.channel.title_in_body)
            for piece in pieces:
                if self.bucket.wait_time() > self.lease_s / 3:  # keep the rest of the digest ours
                    rest = [good[i].notification_id for g in groups[number - 1 :] for i in g]
                    await self.store.extend(rest, self.lease_s + self.bucket.wait_time())
                await self._wait_token()
                result = await self._send(piece, severity, silent)
                if not result.ok:
                    await self._failed(part_rows, result)
                    rest = [good[i].notification_id for g in groups[number:] for i in g]
                    await self.store.release(rest)
                    return
            digest_id = ids.derive("digest", *(r.notification_id for r in part_rows))
            await self.store.sent([r.notification_id for r in part_rows], digest_id=digest_id)
            self._delivered(part_rows, "digested")
            self.stats["digests"] += 1

    # -- plumbing ------------------------------------------------------------------------------

    async def _wait_token(self) -> None:
        while True:
            wait = self.bucket.wait_time()
            if wait <= 0:
                self.bucket.take()
                return
            await asyncio.sleep(wait)

    async def _send(self, part: templates.Rendered, severity: str, silent: bool) -> SendResult:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        result = await loop.run_in_executor(self.executor, self._send_sync, part, severity, silent)
        self.metrics.send_seconds.labels(self.channel.name).observe(time.perf_counter() - started)
        if result.ok:
            self.failures = 0
            self.stats["messages"] += 1
        return result

    def _send_sync(self, part: templates.Rendered, severity: str, silent: bool) -> SendResult:
        try:
            if self._plugin is None:
                self._plugin = self.channel.plugin(self.timeout_s)
            return send_sync(
                self._plugin, part.title, part.body, markdown=part.markdown, severity=severity, silent=silent
            )
        except Exception as error:
            return SendResult(ok=False, error=f"{type(error).__name__}: {error}")

    async def _failed(self, rows: Sequence[Row], result: SendResult) -> None:
        self.failures += 1
        attempts = max(r.attempts for r in rows) + 1
        delay = result.retry_after if result.retry_after is not None else self.backoff(max(attempts, self.failures))
        delay = min(delay, max(self.backoff_max_s, result.retry_after or 0.0))
        self.bucket.block(delay)
        error = result.error or "send failed"
        if result.status:
            error = f"HTTP {result.status}: {error}"
        failed = await self.store.failed_attempt(
            [r.notification_id for r in rows], error, delay_s=delay, max_attempts=self.max_attempts
        )
        self.metrics.count(self.channel.name, rows, "retried")
        self.stats["retries"] += len(rows)
        if failed:
            self.stats["failed"] += failed
            for _ in range(failed):
                self.metrics.total.labels(self.channel.name, rows[0].event_type, "failed").inc()
        logger.warning(
            "notify %s: send of %d rows failed (%s); retry in %.1fs%s",
            self.channel.name,
            len(rows),
            error[:200],
            delay,
            f"; {failed} failed for good after {self.max_attempts} attempts" if failed else "",
        )

    def _delivered(self, rows: Sequence[Row], outcome: str) -> None:
        self.metrics.count(self.channel.name, rows, outcome)
        self.stats["rows"] += len(rows)
        now = datetime.now(UTC)
        for row in rows:
            self.metrics.delivery_seconds.labels(self.channel.name).observe(
                max(0.0, (now - row.created_at).total_seconds())
            )


class Sender:
    """The channel senders of one worker, as background tasks."""

    def __init__(self, channels: Sequence[Channel], store: NotificationStore, metrics: NotifyMetrics, settings: Any):
        self.senders = [
            ChannelSender(
                channel,
                store,
                metrics,
                max_attempts=settings.max_attempts,
                backoff_base_s=settings.backoff_base_s,
                backoff_max_s=settings.backoff_max_s,
                lease_s=settings.lease_s,
                poll_s=settings.poll_s,
                timeout_s=settings.timeout_s,
                digest_interval_s=settings.digest_interval_s,
            )
            for channel in channels
        ]
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    def start(self) -> None:
        if self._tasks:
            return
        for sender in self.senders:
            if getattr(sender.executor, "_shutdown", False):  # stopped before: a fresh thread
                sender.executor = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix=f"p95-notify-{sender.channel.name}"
                )
        self._tasks = [
            asyncio.create_task(sender.run(), name=f"p95-notify-{sender.channel.name}") for sender in self.senders
        ]

    def wake(self) -> None:
        for sender in self.senders:
            sender.wake.set()

    @property
    def lease_s(self) -> float:
        """How long rows inserted for this worker are leased to it (0: nothing is handed over)."""
        return self.senders[0].lease_s if self.senders and self._tasks else 0.0

    def hand_over(self, rows: Sequence[Row]) -> None:
        """New outbox rows, leased to this worker at insert, to its channels' senders in memory."""
        for sender in self.senders:
            mine = [row for row in rows if row.channel == sender.channel.name]
            if mine:
                sender.offer(mine)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        for sender in self.senders:
            sender.executor.shutdown(wait=False, cancel_futures=True)
            held = [row.notification_id for _, row in sender.fresh]
            sender.fresh.clear()
            with contextlib.suppress(Exception):  # given back: the next worker sends them at once
                await sender.store.release(held)
