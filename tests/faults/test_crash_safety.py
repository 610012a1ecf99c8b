"""Kill -9 any worker at any moment: nothing lost, nothing duplicated where it counts.

Reduced size by default (CI); the full run: P95_FAULTS_SIGNALS=10000 P95_FAULTS_SECONDS=240 make faults.
Each test prints its counts (pytest -s shows them)."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from phoenix95.stack import services as stack_services
from tests.faults.harness import TRADING_ENV, Chaos, assert_nothing_lost_or_doubled, kill_plan, run_scenario, workload
from tests.pipeline import Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SIGNALS = int(os.environ.get("P95_FAULTS_SIGNALS", "2000"))
SECONDS = float(os.environ.get("P95_FAULTS_SECONDS", "60"))
KILLS = int(os.environ.get("P95_FAULTS_KILLS", "4"))


def _prepare(namespace, monkeypatch, extra: dict[str, str] | None = None) -> Pipeline:
    from phoenix95.settings import get_settings

    for key, value in {**TRADING_ENV, **(extra or {})}.items():
        monkeypatch.setenv(key, value)
        namespace.env[key] = value
    get_settings.cache_clear()
    return Pipeline(namespace)


def _report(name: str, counts: dict, extra: dict | None = None) -> None:
    print(f"\n{name}: {json.dumps({**counts, **(extra or {})}, indent=1, default=str)}")


def test_sigkill_of_every_stage_loses_and_duplicates_nothing(namespace, monkeypatch):
    pipeline = _prepare(namespace, monkeypatch)
    work = workload(namespace.name, SIGNALS)
    pipeline.start()
    chaos = Chaos(pipeline, kill_plan(SECONDS, KILLS))
    try:
        counts = run_scenario(pipeline, work, duration=SECONDS, faults=chaos.start, timeout=SECONDS * 4 + 180)
    finally:
        chaos.stop.set()
        pipeline.stop()
    _report("sigkill", counts, {"kills": chaos.killed})
    assert len(chaos.killed) >= 3
    assert {stage for _, stage, _ in chaos.killed} >= {"analysis", "risk", "execution", "positions"}
    assert_nothing_lost_or_doubled(counts)


def test_postgres_restart_mid_run_loses_and_duplicates_nothing(namespace, monkeypatch, tmp_path: Path):
    endpoint = stack_services.start_postgres(tmp_path / "pg", preferred_port=0)
    port = int((endpoint.url or "").rsplit(":", 1)[1].split("/")[0])
    pipeline = _prepare(namespace, monkeypatch, {"P95_POSTGRES__URL": endpoint.url or ""})
    work = workload(namespace.name, SIGNALS)
    pipeline.start()
    restart = PostgresRestart(endpoint, tmp_path / "pg", port, after=SECONDS * 0.4, down_for=4.0)
    try:
        counts = run_scenario(pipeline, work, duration=SECONDS * 0.8, faults=restart.start, timeout=SECONDS * 4 + 180)
    finally:
        restart.stop.set()
        pipeline.stop()
        stack_services.stop_postgres(restart.servers[-1])
    _report("postgres restart", counts, {"stopped_at_s": restart.stopped_at})
    assert restart.stopped_at, "PostgreSQL was never restarted"
    assert_nothing_lost_or_doubled(counts)


class PostgresRestart:
    """Stops the run's PostgreSQL `after` seconds in and starts it again `down_for` seconds later."""

    def __init__(self, endpoint: stack_services.Endpoint, data: Path, port: int, *, after: float, down_for: float):
        self.servers = [endpoint]
        self.data = data
        self.port = port
        self.after = after
        self.down_for = down_for
        self.stopped_at: list[float] = []
        self.stop = threading.Event()

    def start(self) -> PostgresRestart:
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def _run(self) -> None:
        started = time.monotonic()
        if self.stop.wait(self.after):
            return
        stack_services.stop_postgres(self.servers[-1])
        self.stopped_at.append(round(time.monotonic() - started, 1))
        time.sleep(self.down_for)
        self.servers.append(stack_services.start_postgres(self.data, preferred_port=self.port))


def test_broker_restart_empties_tansu_and_the_workers_carry_on_with_new_input(namespace, monkeypatch, tmp_path: Path):
    """Tansu keeps topics in memory, so a restart loses everything the broker held: signals not yet
    analysed, outputs in flight between stages, committed offsets. The workers must reconnect,
    recreate the topics and process new input without a manual step."""
    import asyncio

    from phoenix95.stack.processes import stop as stop_process
    from tests.faults.harness import publish_paced

    broker = stack_services.start_broker(tmp_path / "broker", preferred_port=0)
    port = int((broker.url or "").rsplit(":", 1)[1])
    pipeline = _prepare(namespace, monkeypatch, {"P95_KAFKA__BOOTSTRAP_SERVERS": broker.url or ""})
    work = workload(namespace.name, 600)
    half = len(work.timeline) // 2
    before = [e for e in work.timeline[:half] if hasattr(e, "signal_id")]
    after = [e for e in work.timeline[half:] if hasattr(e, "signal_id")]
    pipeline.start()
    chaos = Chaos(pipeline, [])  # no kills: it only restarts workers that exit
    chaos.start()
    brokers = [broker]
    try:

        async def run() -> dict:
            await publish_paced(pipeline, work.timeline[:half], duration=SECONDS * 0.3)
            await asyncio.sleep(5)
            stop_process(brokers[-1].pid, expect=brokers[-1].expect)
            await asyncio.sleep(1)
            brokers.append(
                await asyncio.to_thread(stack_services.start_broker, tmp_path / "broker", preferred_port=port)
            )
            await asyncio.sleep(2)
            await publish_paced(pipeline, work.timeline[half:], duration=SECONDS * 0.3)

            async def new_input_done(db) -> bool:
                ids = [s.signal_id for s in after]
                decided = await pipeline.count(
                    db, "SELECT COUNT(DISTINCT signal_id) FROM risk_verdicts WHERE signal_id = ANY(%s)", (ids,)
                )
                approved = await pipeline.count(
                    db, "SELECT COUNT(*) FROM risk_verdicts WHERE decision = 'APPROVED' AND signal_id = ANY(%s)", (ids,)
                )
                orders = await pipeline.count(db, "SELECT COUNT(*) FROM orders WHERE signal_id = ANY(%s)", (ids,))
                positions = await pipeline.count(db, "SELECT COUNT(*) FROM positions WHERE signal_id = ANY(%s)", (ids,))
                filled = await pipeline.count(
                    db,
                    "SELECT COUNT(*) FROM orders WHERE status = 'filled' AND intent = 'open' AND signal_id = ANY(%s)",
                    (ids,),
                )
                return decided == len(after) and orders == approved and positions == filled

            await pipeline.wait_for(new_input_done, timeout=240, what="the signals published after the broker restart")
            async with pipeline.database() as db:
                first = [s.signal_id for s in before]
                return {
                    "signals_before_restart": len(before),
                    "analysed_before_restart": await pipeline.count(
                        db, "SELECT COUNT(*) FROM signals WHERE signal_id = ANY(%s)", (first,)
                    ),
                    "decided_before_restart": await pipeline.count(
                        db, "SELECT COUNT(*) FROM risk_verdicts WHERE signal_id = ANY(%s)", (first,)
                    ),
                    "signals_after_restart": len(after),
                    "decided_after_restart": await pipeline.count(
                        db,
                        "SELECT COUNT(*) FROM risk_verdicts WHERE signal_id = ANY(%s)",
                        ([s.signal_id for s in after],),
                    ),
                    "duplicate_orders": await pipeline.count(
                        db, "SELECT COUNT(*) - COUNT(DISTINCT verdict_id) FROM orders"
                    ),
                    "worker_restarts": {name: p.restarts for name, p in pipeline.workers.processes.items()},
                }

        report = asyncio.run(run())
    finally:
        chaos.stop.set()
        pipeline.stop()
        stop_process(brokers[-1].pid, expect=brokers[-1].expect)
    _report("broker restart", report)
    assert report["decided_after_restart"] == report["signals_after_restart"]
    assert report["duplicate_orders"] == 0
