"""Every stage worker serves Prometheus metrics on its web port: after a short live run (wall clock,
fresh prices and signals) each /metrics holds its stage's series, and the trading figures agree with
what the stores recorded."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from phoenix95.settings import Settings
from phoenix95.stack.processes import free_port, port_is_free, port_open, wait_until
from phoenix95.streams.stages import STAGES
from tests import factories
from tests.metrics_scrape import Series, scrape, total
from tests.pipeline import Pipeline

pytestmark = pytest.mark.integration

MALFORMED = [b'{"symbol": "XRPUSDT", "action": "hold", "price": "1.10"}']


@pytest.fixture
def pipeline(namespace):
    ports = {stage: free_port() for stage in STAGES}
    running = Pipeline(namespace, web_ports=ports)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def labelled(series: Series, name: str) -> list[dict[str, str]]:
    return [dict(found) for (metric, found) in series if metric == name]


def test_workers_expose_per_stage_and_trading_series_after_a_short_run(pipeline):
    start = datetime.now(UTC) - timedelta(minutes=10)
    prices = factories.price_path(
        [f"{1.18 + 0.0004 * (i % 7):.4f}" for i in range(120)], start=start, step=timedelta(seconds=5)
    )
    now = datetime.now(UTC)
    signals = [
        factories.signal(action="buy", confidence="0.92", price="1.1812", at=now),
        factories.signal(action="short", confidence="0.9", rsi="78", price="1.1812", at=now),
        factories.signal(action="buy", confidence="0.2", price="1.1812", at=now),
    ]

    async def run() -> dict[str, Series]:
        await pipeline.publish(prices)
        risk_port = pipeline.workers.web_ports["risk"]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # risk has the price history (for the volatility and VaR)
            with contextlib.suppress(OSError):
                if total(scrape(risk_port), "p95_stage_processed_total", stage="risk") >= len(prices):
                    break
            await asyncio.sleep(0.5)
        await pipeline.publish(signals)
        await pipeline.publish_raw(pipeline.topics.signals, MALFORMED)

        async def decided(db) -> bool:
            verdicts = await pipeline.count(db, "SELECT COUNT(*) FROM risk_verdicts")
            approved = await pipeline.count(db, "SELECT COUNT(*) FROM risk_verdicts WHERE decision = 'APPROVED'")
            positions = await pipeline.count(db, "SELECT COUNT(*) FROM positions")
            return verdicts == len(signals) and positions == approved

        await pipeline.wait_for(decided, timeout=120, what="verdicts, orders and positions")
        fresh = factories.price(value="1.1815", at=datetime.now(UTC))
        await pipeline.publish([fresh])  # a tick for the open positions
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            series = {stage: scrape(port) for stage, port in pipeline.workers.web_ports.items()}
            opened = total(series["positions"], "p95_position_events_total", kind="opened")
            ticked = total(series["positions"], "p95_position_events_total", kind="tick") > 0
            # the signal -> position figure is observed once the signal's ingest time was looked up
            timed = total(series["positions"], "p95_signal_to_position_seconds_count") >= opened
            if (ticked and timed) or not opened:
                return series
            await asyncio.sleep(0.5)
        return series

    series = asyncio.run(run())

    async def stored() -> tuple[int, int, int, int, list]:
        async with pipeline.database() as db:
            return (
                await pipeline.count(db, "SELECT COUNT(*) FROM signals"),
                await pipeline.count(db, "SELECT COUNT(*) FROM risk_verdicts WHERE decision = 'APPROVED'"),
                await pipeline.count(db, "SELECT COUNT(*) FROM orders WHERE status = 'filled'"),
                await pipeline.count(db, "SELECT COUNT(*) FROM positions WHERE status = 'open'"),
                await db.fetch(
                    "SELECT var_1d_95 FROM risk_verdicts WHERE decision = 'APPROVED' AND var_1d_95 IS NOT NULL"
                    " ORDER BY decided_at DESC LIMIT 1"
                ),
            )

    analysed, approved, filled, open_positions, latest_var = asyncio.run(stored())
    for stage in STAGES:
        metrics = series[stage]
        processed = total(metrics, "p95_stage_processed_total", stage=stage)
        batches = total(metrics, "p95_stage_batch_seconds_count", stage=stage)
        assert processed > 0, stage
        assert batches > 0, stage
        # batch sizes: one observation per batch, and every record finished was read in one
        assert total(metrics, "p95_stage_batch_size_count", stage=stage) == batches, stage
        assert total(metrics, "p95_stage_batch_size_sum", stage=stage) >= processed, stage
        assert total(metrics, "p95_stage_batch_size_bucket", stage=stage, le="+Inf") == batches, stage
        # sink write latency: every batch's facts went through the (timed) sink, which took time
        assert total(metrics, "p95_stage_sink_write_seconds_count", stage=stage) >= batches, stage
        assert total(metrics, "p95_stage_sink_write_seconds_sum", stage=stage) > 0, stage
        assert total(metrics, "p95_stage_sink_write_seconds_bucket", stage=stage, le="+Inf") == total(
            metrics, "p95_stage_sink_write_seconds_count", stage=stage
        ), stage
        assert total(metrics, "p95_stage_input_age_seconds_count", stage=stage) > 0, stage
        assert total(metrics, "p95_stage_last_batch_timestamp_seconds", stage=stage) > time.time() - 300, stage
        assert total(metrics, "process_cpu_seconds_total") > 0, stage

    analysis = series["analysis"]
    assert total(analysis, "p95_stage_processed_total", stage="analysis") == len(signals) + len(MALFORMED)
    assert total(analysis, "p95_stage_dead_lettered_total", stage="analysis") == len(MALFORMED)
    assert total(analysis, "p95_stage_batch_size_sum", stage="analysis") == len(signals) + len(MALFORMED)
    assert total(analysis, "p95_phoenix95_score_count") == analysed == len(signals)
    assert total(analysis, "p95_signal_to_analysis_seconds_count") == len(signals)
    assert total(analysis, "p95_stage_produced_total", stage="analysis", event="Analysis") == len(signals)

    risk = series["risk"]
    assert total(risk, "p95_risk_verdicts_total") == len(signals)
    assert total(risk, "p95_risk_verdicts_total", decision="APPROVED") == approved
    assert total(risk, "p95_risk_rejections_total", reason="CONFIDENCE_BELOW_MIN") >= 1
    assert approved >= 1, "at least one signal was approved (else the trading series stay empty)"
    assert latest_var, "the approved plan has a VaR (risk had the price history)"
    assert total(risk, "p95_planned_var_1d_95_usdt", symbol="XRPUSDT") == pytest.approx(float(latest_var[0][0]))

    execution = series["execution"]
    assert total(execution, "p95_leveraged_trades_total", intent="open") == filled == approved
    assert total(execution, "p95_traded_notional_usdt_total", symbol="XRPUSDT") > 0
    assert total(execution, "p95_signal_to_order_seconds_count") == filled
    assert 0 < total(execution, "p95_signal_to_order_seconds_sum") < 120 * filled

    positions = series["positions"]
    assert total(positions, "p95_position_events_total", kind="opened") == filled
    assert total(positions, "p95_order_to_position_seconds_count") == filled
    # signal ingested -> position written spans the analysis, risk and execution hops as well
    assert total(positions, "p95_signal_to_position_seconds_count") == filled
    assert (
        total(positions, "p95_order_to_position_seconds_sum")
        < total(positions, "p95_signal_to_position_seconds_sum")
        < 120 * filled
    )
    assert total(positions, "p95_open_positions", symbol="XRPUSDT") == open_positions
    assert ("p95_unrealized_pnl_usdt", frozenset({("symbol", "XRPUSDT")})) in positions
    distances = [labels for labels in labelled(positions, "p95_position_distance_to_liquidation_percent")]
    assert len(distances) == open_positions
    assert all(
        0 < total(positions, "p95_position_distance_to_liquidation_percent", **labels) < 100 for labels in distances
    )
    assert total(positions, "p95_distance_to_liquidation_percent_count") >= open_positions


def consecutive_free_ports(count: int) -> int:
    """A port N such that N .. N + count - 1 are all free."""
    for _ in range(50):
        first = free_port()
        if all(port_is_free(first + offset) for offset in range(1, count)):
            return first
    raise AssertionError(f"no {count} consecutive free ports")


def test_one_worker_command_serves_each_supervised_stage_on_its_own_port(namespace):
    first = consecutive_free_ports(2)
    ports = {"analysis": first, "risk": first + 1}
    command = [sys.executable, "-m", "phoenix95", "worker", "--stage", "analysis", "--stage", "risk"]
    process = subprocess.Popen(
        [*command, "--web-port", str(first)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ.copy(),  # the namespace's settings
        start_new_session=True,
    )
    try:
        for stage, port in ports.items():
            wait_until(lambda port=port: port_open(port), timeout=90, what=f"{stage} metrics on :{port}")
        # a signal through both stages: each port's series name the stage that serves them
        pipeline = Pipeline(namespace, stages=())
        signal_event = factories.signal(action="buy", confidence="0.92", price="1.1812", at=datetime.now(UTC))
        asyncio.run(pipeline.publish([signal_event]))
        found: dict[str, Series] = {}

        def both_processed() -> bool:
            found.update({stage: scrape(port) for stage, port in ports.items()})
            return all(total(found[stage], "p95_stage_processed_total", stage=stage) >= 1 for stage in ports)

        wait_until(both_processed, timeout=90, interval=0.5, what="the signal through analysis and risk")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            _, stderr = process.communicate()

    assert process.returncode == 0, stderr.decode()
    analysis, risk = found["analysis"], found["risk"]
    assert labelled(analysis, "p95_stage_processed_total") == [{"stage": "analysis"}]
    assert total(analysis, "p95_stage_processed_total", stage="analysis") == 1
    assert total(analysis, "p95_signal_to_analysis_seconds_count") == 1
    assert labelled(risk, "p95_stage_processed_total") == [{"stage": "risk"}]
    assert total(risk, "p95_risk_verdicts_total") == 1
    assert total(risk, "p95_signal_to_analysis_seconds_count") == 0
    host = Settings().metrics.host
    announced = stderr.decode().splitlines()
    for stage, port in ports.items():
        assert f"{stage}: http://{host}:{port}/metrics" in announced, announced
    assert not port_open(first) and not port_open(first + 1), "the supervised stages stopped with it"
