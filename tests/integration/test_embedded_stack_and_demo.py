"""The two things the README promises a fresh machine: `p95 up | status | down` manage the embedded
stack, and `p95 demo` runs the whole pipeline on it and reports counters read from the stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from phoenix95.stack.processes import is_running

pytestmark = pytest.mark.integration


def p95(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("P95_")}
    env["P95_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "phoenix95", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_up_status_down_manage_exactly_the_processes_they_started(tmp_path):
    home = tmp_path / "state"
    started = p95(home, "up")
    assert started.returncode == 0, started.stderr
    try:
        status = p95(home, "status", "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        report = json.loads(status.stdout)
        assert set(report) == {"kafka", "postgres", "redis", "timeseries", "components"}
        assert report.pop("components") == []  # no worker, webhook or feed runs
        for name in ("kafka", "postgres", "redis"):
            assert report[name]["healthy"] and report[name]["url"], name
        pids = {name: item["pid"] for name, item in report.items() if item["pid"]}
        again = p95(home, "up")
        assert again.returncode == 0 and "already running" in again.stderr
        again_report = json.loads(p95(home, "status", "--json").stdout)
        assert {n: i["pid"] for n, i in again_report.items() if n != "components" and i["pid"]} == pids
    finally:
        stopped = p95(home, "down")
    assert stopped.returncode == 0
    assert not any(is_running(pid) for pid in pids.values())
    assert p95(home, "status", "--json").returncode == 1


def test_demo_runs_the_whole_pipeline_and_counts_from_the_stores(tmp_path):
    result = p95(tmp_path / "demo-home", "demo", "--json", timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads(result.stdout)
    for key in (
        "signals_published",
        "signals_processed",
        "verdicts_approved",
        "verdicts_rejected",
        "orders",
        "positions_opened",
        "position_ticks",
        "redis_keys",
        "timeseries_points",
    ):
        assert summary[key] > 0, key
    assert summary["signals_processed"] == summary["signals_published"]
    assert summary["dlq"] == 6  # the six malformed sample messages, and nothing else
    assert summary["postgres_rows"]["trades"] == summary["postgres_rows"]["positions"] == summary["positions_opened"]
    assert not (tmp_path / "demo-home" / "endpoints.json").exists()  # it stopped what it started
