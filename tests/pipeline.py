"""A running pipeline for integration tests: the four stage workers as real processes."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from typing import Any

import pytest

from phoenix95.connectors.kafka_admin import ensure_topics
from phoenix95.schemas.codec import Codec
from phoenix95.schemas.envelope import Event
from phoenix95.schemas.topics import Topics
from phoenix95.settings import Settings
from phoenix95.storage.postgres import Database, migrate
from phoenix95.streams.producer import EventProducer
from phoenix95.streams.stages import STAGES
from phoenix95.streams.supervisor import WorkerSet
from tests.conftest import Namespace

#: Waits are for hangs, not speed: P95_TEST_TIMEOUT_SCALE=3 triples them on a slow machine.
TIMEOUT_SCALE = float(os.environ.get("P95_TEST_TIMEOUT_SCALE", "1"))


class Pipeline:
    def __init__(
        self,
        ns: Namespace,
        stages: Sequence[str] = STAGES,
        web_ports: dict[str, int] | None = None,
        instances: int = 1,
    ):
        self.ns = ns
        self.settings = Settings()  # from the environment the namespace fixture exported
        self.topics = Topics(ns.name)
        self.workers = WorkerSet(stages, env=ns.env, log_dir=ns.home / "logs", web_ports=web_ports, instances=instances)
        self.codec = Codec()

    async def prepare(self) -> None:
        kafka = self.settings.kafka
        await ensure_topics(
            kafka.bootstrap_servers,
            self.topics.all(),
            partitions=kafka.partitions,
            counts=self.topics.partition_counts(kafka.partitions, self.settings.risk.clock),
        )
        await migrate(self.settings.postgres_url(), self.settings.postgres.db_schema)

    def start(self) -> None:
        asyncio.run(self.prepare())
        self.workers.start()

    def stop(self) -> None:
        self.workers.stop()

    async def publish(self, events: Sequence[Event]) -> None:
        producer = EventProducer(self.settings.kafka.bootstrap_servers, self.topics, self.codec)
        await producer.start()
        try:
            await producer.publish(list(events))
        finally:
            await producer.stop()

    async def publish_raw(
        self,
        topic: str,
        values: Sequence[bytes],
        key: bytes | None = b"XRPUSDT",
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        producer = EventProducer(self.settings.kafka.bootstrap_servers, self.topics, self.codec)
        await producer.start()
        try:
            await producer.publish_raw([(topic, key, value, headers or []) for value in values])
        finally:
            await producer.stop()

    def database(self) -> Database:
        return Database(self.settings.postgres_url(), schema=self.settings.postgres.db_schema)

    async def wait_for(
        self,
        check: Callable[[Database], Awaitable[bool]],
        *,
        timeout: float = 90.0,
        what: str = "condition",
        down: Collection[str] = (),
    ) -> None:
        """Poll `check` until it holds; a worker found dead fails the wait at once, unless the test
        stopped it on purpose and names it in `down`."""
        timeout *= TIMEOUT_SCALE
        deadline = time.monotonic() + timeout
        async with self.database() as db:
            while time.monotonic() < deadline:
                if await check(db):
                    return
                dead = [s for s in self.workers.names if s not in down and not self.workers.alive(s)]
                if dead:
                    raise AssertionError(f"worker(s) {dead} died; see {self.ns.home / 'logs'}")
                await asyncio.sleep(0.3)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; logs in {self.ns.home / 'logs'}")

    async def count(self, db: Database, sql: str, params: Sequence[Any] | None = None) -> int:
        rows = await db.fetch(sql, params)
        return int(rows[0][0])

    async def caught_up(self, stages: Sequence[str] = ("positions",)) -> bool:
        """Every input of the stages is committed up to its end (nothing left to process)."""
        from phoenix95.connectors.kafka_admin import committed_offsets, end_offsets
        from phoenix95.streams.stages import spec

        bootstrap = self.settings.kafka.bootstrap_servers
        for stage in stages:
            inputs = [self.topics.name(base) for base in spec(stage).inputs]
            ends = await end_offsets(bootstrap, inputs)
            committed = await committed_offsets(bootstrap, self.topics.group(stage), inputs)
            if any(committed.get(tp, 0) < end for tp, end in ends.items() if end > 0):
                return False
        return True


def run_pipeline(
    ns: Namespace, monkeypatch: pytest.MonkeyPatch | None = None, *, clock: str | None = None
) -> Iterator[Pipeline]:
    """For a fixture: the four workers running for one test (on the given risk clock)."""
    if clock is not None:
        assert monkeypatch is not None
        monkeypatch.setenv("P95_RISK__CLOCK", clock)
        ns.env["P95_RISK__CLOCK"] = clock
    running = Pipeline(ns)
    running.start()
    try:
        yield running
    finally:
        running.stop()
