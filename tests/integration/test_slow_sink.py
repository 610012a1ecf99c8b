"""A slow sink holds up only its own stage: while the positions stage's PostgreSQL writes are stuck
behind a lock (another session holds the positions table), analysis, risk and execution go on
writing every signal, verdict and order; the positions stage commits no offset past its unwritten
rows, cancels the stuck statement at its timeout and retries it (counted in
`p95_stage_sink_retries_total`); once the lock is gone it catches up, writing every position once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import psycopg
import pytest
from psycopg import sql

from phoenix95.connectors.kafka_admin import committed_offsets, read_records
from phoenix95.schemas.messages import PositionEvent
from phoenix95.stack.processes import free_port
from phoenix95.streams.stages import STAGES
from tests import factories
from tests.metrics_scrape import scrape, total
from tests.pipeline import TIMEOUT_SCALE, Pipeline

pytestmark = pytest.mark.integration


def test_a_stalled_postgres_write_in_one_stage_does_not_hold_up_the_others(namespace, monkeypatch):
    for name, value in {"P95_RISK__CLOCK": "event", "P95_POSTGRES__STATEMENT_TIMEOUT_S": "1"}.items():
        namespace.env[name] = value
        monkeypatch.setenv(name, value)
    from phoenix95.settings import get_settings

    get_settings.cache_clear()
    pipeline = Pipeline(namespace, web_ports={stage: free_port() for stage in STAGES})
    pipeline.start()
    try:
        report = asyncio.run(_run(pipeline))
    finally:
        pipeline.stop()
        get_settings.cache_clear()
    print("slow sink report:", report)


async def _run(pipeline: Pipeline) -> dict[str, object]:
    _, signals, timeline = factories.candle_session(pipeline.ns.name, signals=200, prices=600)
    half = len(timeline) // 2
    await pipeline.publish(timeline[:half])

    async def running(db) -> bool:
        return await pipeline.count(db, "SELECT COUNT(*) FROM positions") >= 3

    await pipeline.wait_for(running, what="positions opened before the stall")

    settings = pipeline.settings
    locker = await psycopg.AsyncConnection.connect(settings.postgres_url())
    try:
        await locker.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(settings.postgres.db_schema)))
        # EXCLUSIVE: other sessions may read the table, none may write it.
        await locker.execute("LOCK TABLE positions IN EXCLUSIVE MODE")
        # A batch written before the lock is committed at the next commit (every 0.5 s).
        await asyncio.sleep(2.0)
        bootstrap = settings.kafka.bootstrap_servers
        group, orders_topic = pipeline.topics.group("positions"), pipeline.topics.orders
        committed_at_lock = await committed_offsets(bootstrap, group, [orders_topic])
        async with pipeline.database() as db:
            positions_at_lock = await pipeline.count(db, "SELECT COUNT(*) FROM positions")
            orders_at_lock = await pipeline.count(db, "SELECT COUNT(*) FROM orders")
        stalled_at = time.monotonic()
        await pipeline.publish(timeline[half:])

        async def upstream_done(db) -> bool:
            verdicts = await pipeline.count(db, "SELECT COUNT(*) FROM risk_verdicts")
            approved = await pipeline.count(db, "SELECT COUNT(*) FROM risk_verdicts WHERE decision = 'APPROVED'")
            orders = await pipeline.count(db, "SELECT COUNT(*) FROM orders")
            return verdicts == len(signals) and orders == approved

        # The other stages finish every signal while positions cannot write a row.
        await pipeline.wait_for(upstream_done, timeout=120, what="analysis, risk and execution during the stall")
        upstream_s = time.monotonic() - stalled_at
        async with pipeline.database() as db:
            positions_during = await pipeline.count(db, "SELECT COUNT(*) FROM positions")
            orders_during = await pipeline.count(db, "SELECT COUNT(*) FROM orders")
        assert positions_during == positions_at_lock
        assert orders_during > orders_at_lock
        committed_during = await committed_offsets(bootstrap, group, [orders_topic])
        for tp, offset in committed_during.items():
            assert offset <= committed_at_lock.get(tp, 0), f"positions committed {tp} past its unwritten rows"
        # The stuck statement is cancelled at its timeout and retried, not left hanging unseen.
        port = pipeline.workers.web_ports["positions"]
        deadline = time.monotonic() + 30 * TIMEOUT_SCALE
        while (retries := total(scrape(port), "p95_stage_sink_retries_total", stage="positions", store="postgres")) < 2:
            assert time.monotonic() < deadline, "the stuck positions write was never retried"
            await asyncio.sleep(0.5)
        assert pipeline.workers.alive("positions")
    finally:
        await locker.rollback()  # the lock is gone
        await locker.close()

    async def settled(db) -> bool:
        filled = await pipeline.count(db, "SELECT COUNT(*) FROM orders WHERE status = 'filled' AND intent = 'open'")
        positions = await pipeline.count(db, "SELECT COUNT(*) FROM positions")
        return positions == filled and await pipeline.caught_up(("positions",))

    await pipeline.wait_for(settled, timeout=120, what="positions caught up after the stall")
    async with pipeline.database() as db:
        positions = await pipeline.count(db, "SELECT COUNT(*) FROM positions")
        dead = await pipeline.count(db, "SELECT COUNT(*) FROM dead_letters")
    opened = Counter(
        [
            event.position_id
            async for record in read_records(
                pipeline.settings.kafka.bootstrap_servers, [pipeline.topics.position_ticks]
            )
            if (event := pipeline.codec.decode(record.value, PositionEvent)).kind == "opened"
        ]
    )
    assert len(opened) == positions and set(opened.values()) == {1}  # every position opened once, on the topic too
    assert dead == 0
    return {
        "positions_at_lock": positions_at_lock,
        "orders_at_lock": orders_at_lock,
        "orders_written_during_stall": orders_during - orders_at_lock,
        "upstream_finished_s": round(upstream_s, 1),
        "positions_retries": retries,
        "positions_after": positions,
    }
