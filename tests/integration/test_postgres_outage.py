"""PostgreSQL goes down in the middle of a run and comes back: every event is written exactly once,
and while it is down no stage commits an offset past an input whose rows are unwritten."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from phoenix95.connectors.kafka_admin import committed_offsets
from phoenix95.stack import services as stack_services
from tests import factories
from tests.pipeline import Pipeline

pytestmark = pytest.mark.integration

#: The input topic of each stage whose every record is written to PostgreSQL.
WRITING_INPUTS = {"analysis": "signals", "risk": "analysis", "execution": "risk_verdicts", "positions": "orders"}


def test_postgres_outage_mid_run_ends_with_every_event_written_exactly_once(
    namespace, services, tmp_path: Path, monkeypatch
):
    endpoint = stack_services.start_postgres(tmp_path / "pg", preferred_port=0)
    port = int((endpoint.url or "").rsplit(":", 1)[1].split("/")[0])
    for env in (namespace.env,):
        env["P95_POSTGRES__URL"] = endpoint.url or ""
        env["P95_RISK__CLOCK"] = "event"
    monkeypatch.setenv("P95_POSTGRES__URL", endpoint.url or "")
    monkeypatch.setenv("P95_RISK__CLOCK", "event")
    from phoenix95.settings import get_settings

    get_settings.cache_clear()
    servers = [endpoint]  # the server now running (replaced when it is restarted)
    pipeline = Pipeline(namespace)
    pipeline.start()
    try:
        report = asyncio.run(_run(pipeline, tmp_path, port, servers))
    finally:
        pipeline.stop()
        stack_services.stop_postgres(servers[-1])
        get_settings.cache_clear()
    print("outage report:", report)


async def _run(
    pipeline: Pipeline, tmp_path: Path, port: int, servers: list[stack_services.Endpoint]
) -> dict[str, object]:
    _, signals, timeline = factories.candle_session(pipeline.ns.name, signals=300, prices=900)
    third = len(timeline) // 3
    await pipeline.publish(timeline[:third])

    async def running(db) -> bool:
        return await pipeline.count(db, "SELECT COUNT(*) FROM positions") >= 3

    await pipeline.wait_for(running, what="the pipeline running before the outage")

    # Outage: stop the server, then publish more while it is down.
    stack_services.stop_postgres(servers[-1])
    # Inputs whose rows were written before the stop are still committed at the next commit
    # (every 0.5 s): let that happen, then nothing may move while the server is down.
    await asyncio.sleep(2.0)
    topics = {stage: getattr(pipeline.topics, name) for stage, name in WRITING_INPUTS.items()}
    bootstrap = pipeline.settings.kafka.bootstrap_servers
    at_stop = {
        stage: await committed_offsets(bootstrap, pipeline.topics.group(stage), [topic])
        for stage, topic in topics.items()
    }
    await pipeline.publish(timeline[third : 2 * third])
    samples = 0
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        for stage, topic in topics.items():
            now = await committed_offsets(bootstrap, pipeline.topics.group(stage), [topic])
            for tp, offset in now.items():
                assert offset <= at_stop[stage].get(tp, 0), (
                    f"{stage} committed {tp} past {at_stop[stage].get(tp)} while PostgreSQL was down"
                )
        samples += 1
        await asyncio.sleep(0.5)

    # Restore on the same port and data directory, then publish the rest.
    restarted = stack_services.start_postgres(tmp_path / "pg", preferred_port=port)
    assert restarted.url == servers[-1].url
    servers.append(restarted)
    await pipeline.publish(timeline[2 * third :])

    async def settled(db) -> bool:
        verdicts = await pipeline.count(db, "SELECT COUNT(*) FROM risk_verdicts")
        approved = await pipeline.count(db, "SELECT COUNT(*) FROM risk_verdicts WHERE decision = 'APPROVED'")
        orders = await pipeline.count(db, "SELECT COUNT(*) FROM orders")
        filled = await pipeline.count(db, "SELECT COUNT(*) FROM orders WHERE status = 'filled' AND intent = 'open'")
        positions = await pipeline.count(db, "SELECT COUNT(*) FROM positions")
        return verdicts == len(signals) and orders == approved and positions == filled

    await pipeline.wait_for(settled, timeout=240, what="every signal written after the outage")
    async with pipeline.database() as db:
        signal_rows = await pipeline.count(db, "SELECT COUNT(*) FROM signals")
        distinct = await pipeline.count(db, "SELECT COUNT(DISTINCT signal_id) FROM signals")
        verdicts = await pipeline.count(db, "SELECT COUNT(*) FROM risk_verdicts")
        per_signal = await pipeline.count(
            db, "SELECT COALESCE(MAX(n), 0) FROM (SELECT COUNT(*) n FROM risk_verdicts GROUP BY signal_id) x"
        )
        orders = await pipeline.count(db, "SELECT COUNT(*) FROM orders")
        per_verdict = await pipeline.count(
            db, "SELECT COALESCE(MAX(n), 0) FROM (SELECT COUNT(*) n FROM orders GROUP BY verdict_id) x"
        )
        trades = await pipeline.count(db, "SELECT COUNT(*) FROM trades")
        positions = await pipeline.count(db, "SELECT COUNT(*) FROM positions")
        dead = await pipeline.count(db, "SELECT COUNT(*) FROM dead_letters")
    assert signal_rows == distinct == verdicts == len(signals)
    assert per_signal == 1 and per_verdict == 1
    assert trades == positions
    assert dead == 0
    return {
        "signals": signal_rows,
        "verdicts": verdicts,
        "orders": orders,
        "trades": trades,
        "positions": positions,
        "offset_samples_while_down": samples,
        "dead_letters": dead,
    }
