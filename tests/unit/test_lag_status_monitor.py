"""Snapshots, JSON rows, the Prometheus collector and the probe, over offsets given by the test (the
same code against the real broker is in tests/integration/test_lag.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from phoenix95.monitoring.exporter import LagCollector
from phoenix95.monitoring.monitor import GroupTarget, LagMonitor, LagSnapshot, pipeline_targets
from phoenix95.monitoring.offsets import PartitionOffsets
from phoenix95.monitoring.probe import PipelineLagProbe
from phoenix95.monitoring.status import Status, StatusRules

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


class ScriptedReader:
    """Answers `read` with the next scripted offsets (an exception in the script is raised)."""

    def __init__(self, script: Sequence[Mapping[str, list[PartitionOffsets]] | Exception]):
        self.script = list(script)
        self.calls = 0

    async def read(self, groups: Mapping[str, Sequence[str]]) -> Mapping[str, list[PartitionOffsets]]:
        step = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        if isinstance(step, Exception):
            raise step
        return {group: step.get(group, []) for group in groups}

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.at = 100.0

    def monotonic(self) -> float:
        return self.at

    def wall(self) -> datetime:
        return NOW + timedelta(seconds=self.at - 100.0)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def monitor_over(reader: ScriptedReader, targets: list[GroupTarget], clock: Clock) -> LagMonitor:
    return LagMonitor(
        reader,  # type: ignore[arg-type]
        targets,
        rules=StatusRules(window_s=4.0, min_samples=3),
        monotonic=clock.monotonic,
        wall=clock.wall,
    )


TARGETS = [GroupTarget("g-analysis", ("signals",), "analysis"), GroupTarget("g-other", ("prices",))]


def test_rows_carry_offsets_lag_and_age_of_the_oldest_unconsumed_message():
    reader = ScriptedReader(
        [
            {
                "g-analysis": [
                    PartitionOffsets("signals", 0, 7, 0, 10, ms(NOW - timedelta(seconds=42))),
                    PartitionOffsets("signals", 1, 5, 0, 5, None),
                ],
                "g-other": [PartitionOffsets("prices", 0, None, 3, 9, None)],
            }
        ]
    )
    snapshot = asyncio.run(monitor_over(reader, TARGETS, Clock()).sample())
    rows = snapshot.rows()
    assert rows[0] == {
        "kind": "partition",
        "group": "g-analysis",
        "stage": "analysis",
        "topic": "signals",
        "partition": 0,
        "committed": 7,
        "end": 10,
        "lag": 3,
        "lag_seconds": 42.0,
        "status": "OK",
    }
    assert rows[1]["lag"] == 0 and rows[1]["lag_seconds"] == 0.0
    assert rows[2] == {
        "kind": "group",
        "group": "g-analysis",
        "stage": "analysis",
        "topic": None,
        "partition": None,
        "committed": None,
        "end": None,
        "lag": 3,
        "lag_seconds": 42.0,
        "status": "OK",
        "worst": "OK",
        "partitions": 2,
    }
    # Never committed: lag counts from the log start; the message could not be read: age unknown.
    assert rows[3]["committed"] is None and rows[3]["lag"] == 6 and rows[3]["lag_seconds"] is None
    assert rows[4]["group"] == "g-other" and rows[4]["lag_seconds"] is None
    assert snapshot.ok
    assert snapshot.max_lag_seconds({"g-analysis"}) == 42.0
    assert snapshot.max_lag_seconds() is None, "an unknown age is not reported as no lag"


def test_group_turns_err_when_a_partition_stalls_and_the_snapshot_is_not_ok():
    clock = Clock()
    stuck = {"g-analysis": [PartitionOffsets("signals", 0, 7, 0, 10, ms(NOW))]}
    monitor = monitor_over(ScriptedReader([stuck]), TARGETS[:1], clock)
    seen = []
    for _ in range(4):
        snapshot = asyncio.run(monitor.sample())
        seen.append((snapshot.partitions[0].status, snapshot.groups[0].status))
        clock.at += 1.0
    assert seen[0] == (Status.OK, Status.OK)
    assert seen[-1] == (Status.STALL, Status.ERR)
    assert not snapshot.ok
    assert snapshot.groups[0].worst == Status.STALL


def falling_behind_snapshot() -> LagSnapshot:
    """A group whose commits still move while its lag grows: WARN, nothing worse."""
    clock = Clock()
    script = [{"g-analysis": [PartitionOffsets("signals", 0, 5 + i, 0, 10 + 3 * i, ms(NOW))]} for i in range(3)]
    monitor = monitor_over(ScriptedReader(script), TARGETS[:1], clock)
    for _ in script:
        snapshot = asyncio.run(monitor.sample())
        clock.at += 1.0
    return snapshot


@pytest.mark.parametrize("output", [["--json"], []], ids=["json", "table"])
def test_lag_command_exits_non_zero_when_a_group_is_only_warn(monkeypatch, output):
    from phoenix95.cli import lag as lag_command
    from phoenix95.cli.main import app

    snapshot = falling_behind_snapshot()
    assert [g.status for g in snapshot.groups] == [Status.WARN]

    async def report(*args: object) -> LagSnapshot:
        return snapshot

    monkeypatch.setattr(lag_command, "_report", report)
    result = CliRunner().invoke(app, ["lag", *output])

    assert result.exit_code == 1, result.output
    if output:
        (summary,) = [row for row in json.loads(result.stdout) if row["kind"] == "group"]
        assert (summary["status"], summary["lag"]) == ("WARN", 9)


def test_collector_exposes_the_latest_snapshot():
    reader = ScriptedReader(
        [{"g-analysis": [PartitionOffsets("signals", 0, 7, 0, 10, ms(NOW - timedelta(seconds=5)))]}]
    )
    monitor = monitor_over(reader, TARGETS[:1], Clock())
    registry = CollectorRegistry()
    registry.register(LagCollector(monitor))
    before = generate_latest(registry).decode()
    assert "p95_consumer_lag_messages{" not in before
    asyncio.run(monitor.sample())
    values = scraped(registry)
    labels = {"group": "g-analysis", "stage": "analysis", "topic": "signals", "partition": "0"}
    assert values[("p95_consumer_lag_messages", frozenset(labels.items()))] == 3
    assert values[("p95_consumer_lag_seconds", frozenset(labels.items()))] == 5
    assert values[("p95_consumer_committed_offset", frozenset(labels.items()))] == 7
    assert values[("p95_topic_end_offset", frozenset({"topic": "signals", "partition": "0"}.items()))] == 10
    assert values[("p95_consumer_partition_status", frozenset({**labels, "status": "OK"}.items()))] == 1
    assert values[("p95_consumer_partition_status", frozenset({**labels, "status": "STALL"}.items()))] == 0
    group = {"group": "g-analysis", "stage": "analysis"}
    assert values[("p95_consumer_group_lag_seconds", frozenset(group.items()))] == 5
    assert values[("p95_consumer_group_status", frozenset({**group, "status": "OK"}.items()))] == 1
    assert values[("p95_consumer_group_status_code", frozenset(group.items()))] == 0
    assert values[("p95_lag_samples_total", frozenset())] == 1


def scraped(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_monitor_loop_counts_failed_samples_and_keeps_sampling():
    good = {"g-analysis": [PartitionOffsets("signals", 0, 10, 0, 10, None)]}
    reader = ScriptedReader([ConnectionError("broker down"), good])
    monitor = LagMonitor(reader, TARGETS[:1])  # type: ignore[arg-type]

    async def run() -> None:
        task = asyncio.create_task(monitor.run(0.01))
        while monitor.samples_total < 2:
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(asyncio.wait_for(run(), 5))
    assert monitor.errors_total == 1
    assert monitor.latest is not None and monitor.latest.ok


def test_pipeline_targets_are_the_stage_groups_and_their_inputs():
    targets = {t.stage: t for t in pipeline_targets("ns1")}
    assert targets["analysis"] == GroupTarget("ns1.p95-analysis", ("ns1.p95.signals",), "analysis")
    assert targets["risk"].topics == ("ns1.p95.analysis", "ns1.p95.market.prices")
    assert targets["execution"].topics == ("ns1.p95.risk.verdicts", "ns1.p95.market.prices")
    assert targets["positions"].topics == ("ns1.p95.orders", "ns1.p95.market.prices")


def probe_over(reader: ScriptedReader, *, interval_s: float, stale_after_s: float) -> PipelineLagProbe:
    probe = PipelineLagProbe("unused:9092", "ns", interval_s=interval_s, stale_after_s=stale_after_s)
    probe.monitor = LagMonitor(reader, pipeline_targets("ns", ["analysis"]))  # type: ignore[arg-type]
    return probe


def test_probe_reports_the_oldest_unconsumed_message_of_its_groups():
    lagging = {"ns.p95-analysis": [PartitionOffsets("ns.p95.signals", 0, 1, 0, 9, ms(datetime.now(UTC)) - 12_000)]}

    async def run() -> float:
        probe = probe_over(ScriptedReader([lagging]), interval_s=0.05, stale_after_s=5.0)
        await probe.start()
        try:
            return probe.lag_seconds()
        finally:
            await probe.stop()

    assert asyncio.run(run()) == pytest.approx(12.0, abs=1.0)


def test_probe_does_not_take_an_unknown_age_for_a_measurement():
    unreadable = {"ns.p95-analysis": [PartitionOffsets("ns.p95.signals", 0, 1, 0, 9, None)]}

    async def run() -> float:
        probe = probe_over(ScriptedReader([unreadable]), interval_s=0.05, stale_after_s=0.2)
        await probe.start()
        try:
            await asyncio.sleep(0.5)
            return probe.lag_seconds()
        finally:
            await probe.stop()

    assert asyncio.run(run()) >= 0.3


def test_blind_probe_reports_ever_growing_lag():
    caught_up = {"ns.p95-analysis": [PartitionOffsets("ns.p95.signals", 0, 9, 0, 9, None)]}
    reader = ScriptedReader([caught_up, ConnectionError("broker down")])

    async def run() -> tuple[float, float]:
        probe = probe_over(reader, interval_s=0.05, stale_after_s=0.3)
        await probe.start()
        try:
            first = probe.lag_seconds()
            await asyncio.sleep(0.6)
            return first, probe.lag_seconds()
        finally:
            await probe.stop()

    first, later = asyncio.run(run())
    assert first == 0.0
    assert later >= 0.5
    assert reader.calls > 3
