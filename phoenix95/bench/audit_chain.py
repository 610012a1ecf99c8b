"""`audit_chain_cost`: what the audit chain costs the pipeline (issue #18: <= 10 % of e2e_throughput).

The `e2e_throughput` workload twice in the same run, on the same machine: once with the chain on
(every verdict, order, fill and close chained in the stages' own batches) and once with it off
(`compliance.audit_enabled=false`), each in a namespace of its own. Two figures per run:
- throughput (signals/s, wall clock): the figure the issue names, noisy on a shared machine;
- CPU seconds of the four stage workers per 1,000 signals: robust when other work shares the
  machine (the chain's hashing and canonical JSON run in the workers; its inserts in PostgreSQL,
  whose CPU is not counted here, but whose waits show in the throughput).

`value` is the chain's cost in % of the throughput without it (negative: noise in its favour).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from phoenix95.schemas.messages import Signal
from phoenix95.settings import Settings

#: The issue's budget: the chain may cost this much of e2e_throughput.
BUDGET_PCT = 10.0


def _cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    import psutil

    seconds = {}
    for name, pid in pids.items():
        times = psutil.Process(pid).cpu_times()
        seconds[name] = times.user + times.system
    return seconds


def measure(base: Settings, *, audit: bool, signals: int, timeout: float = 900.0) -> dict[str, Any]:
    """One e2e_throughput run with the chain on or off: signals/s, worker CPU, audit entries."""
    from phoenix95.bench.pipeline import BenchPipeline

    env = {"P95_RISK__CLOCK": "event", "P95_COMPLIANCE__AUDIT_ENABLED": "true" if audit else "false"}
    with BenchPipeline(base, env) as pipeline:
        return asyncio.run(_measure(pipeline, signals, timeout))


async def _measure(pipeline: Any, signals: int, timeout: float) -> dict[str, Any]:
    from phoenix95.bench.pipeline import event_time_workload
    from phoenix95.storage.postgres import Database

    await pipeline.warm_up()
    batch, prices = event_time_workload(signals, pipeline.settings.namespace, start=datetime(2022, 1, 1, tzinfo=UTC))
    timeline = sorted([*batch, *prices], key=lambda e: (e.ts_event, 0 if isinstance(e, Signal) else 1))
    pids = {name: entry.process.pid for name, entry in pipeline.workers.processes.items()}
    cpu_before = _cpu_seconds(pids)
    started = time.perf_counter()
    await pipeline.publish(timeline)
    await pipeline.until_done(signals + 1, timeout)
    elapsed = time.perf_counter() - started
    cpu = {name: round(after - cpu_before[name], 3) for name, after in _cpu_seconds(pids).items()}
    async with Database(pipeline.settings.postgres_url(), schema=pipeline.settings.postgres.db_schema) as db:
        entries = (await db.fetch("SELECT COUNT(*) FROM audit_log WHERE actor LIKE 'stage:%%'"))[0][0]
    total_cpu = sum(cpu.values())
    return {
        "signals_per_s": round(signals / elapsed, 1),
        "elapsed_s": round(elapsed, 2),
        "worker_cpu_s": round(total_cpu, 2),
        "worker_cpu_s_per_1000_signals": round(total_cpu / signals * 1000, 3),
        "worker_cpu_s_by_stage": cpu,
        "audit_entries": entries,
        "run_id": pipeline.run_id,
    }


def run(base: Settings, *, signals: int) -> dict[str, Any]:
    """Chain off, then on (same size, same machine, same run)."""
    off = measure(base, audit=False, signals=signals)
    on = measure(base, audit=True, signals=signals)
    cost_pct = (1 - on["signals_per_s"] / off["signals_per_s"]) * 100 if off["signals_per_s"] else None
    cpu_off, cpu_on = off["worker_cpu_s_per_1000_signals"], on["worker_cpu_s_per_1000_signals"]
    return {
        "value": round(cost_pct, 1) if cost_pct is not None else None,
        "unit": "% of e2e_throughput",
        "budget_pct": BUDGET_PCT,
        "within_budget": cost_pct is not None and cost_pct <= BUDGET_PCT,
        "signals": signals,
        "chain_on": on,
        "baseline": {"chain_off_signals_per_s": off["signals_per_s"], "chain_off_cpu_s_per_1000": cpu_off},
        "chain_off": off,
        "cpu_cost_pct": round((cpu_on / cpu_off - 1) * 100, 1) if cpu_off else None,
        "cpu_us_per_audit_entry": (
            round((on["worker_cpu_s"] - off["worker_cpu_s"]) / on["audit_entries"] * 1e6, 1)
            if on["audit_entries"]
            else None
        ),
    }
