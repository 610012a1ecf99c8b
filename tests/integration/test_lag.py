"""Consumer lag against the real broker: offsets moved by a plain aiokafka consumer with a group id,
messages with timestamps chosen by the test, and the expected figures computed here independently."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from phoenix95.connectors.kafka_admin import ensure_topics
from phoenix95.monitoring.monitor import GroupTarget, LagMonitor, LagSnapshot
from phoenix95.monitoring.offsets import OffsetReader
from phoenix95.monitoring.probe import PipelineLagProbe
from phoenix95.monitoring.status import Status, StatusRules
from phoenix95.schemas.convert import analyze
from phoenix95.schemas.topics import Topics
from phoenix95.stack.processes import free_port, port_open, wait_until
from tests import factories
from tests.metrics_scrape import scrape
from tests.pipeline import Pipeline

pytestmark = pytest.mark.integration


#: The fields the issue asks of every `p95 lag --json` row.
ROW_KEYS = frozenset({"group", "topic", "partition", "committed", "end", "lag", "lag_seconds", "status"})
#: A group's summary row: the same fields (no topic, partition or offsets), its worst partition and count.
SUMMARY_KEYS = ROW_KEYS | {"kind", "stage", "worst", "partitions"}


def now_ms() -> int:
    return int(time.time() * 1000)


async def produce(bootstrap: str, topic: str, timestamps: Mapping[int, list[int]]) -> None:
    """Messages on the given partitions, each with the given broker timestamp (ms)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, b"m", partition=partition, timestamp_ms=stamp)
            for partition, stamps in timestamps.items()
            for stamp in stamps
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def commit(bootstrap: str, group: str, topic: str, offsets: Mapping[int, int]) -> None:
    """Commit offsets for a group, as any consumer of the group would (no subscription, no join)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = {partition: TopicPartition(topic, partition) for partition in offsets}
        consumer.assign(list(partitions.values()))
        await consumer.commit({partitions[p]: offset for p, offset in offsets.items()})
    finally:
        await consumer.stop()


def p95_lag(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "phoenix95", "lag", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
    )


@pytest.fixture
def topic(services, namespace) -> str:
    name = f"{namespace.name}.lag.events"
    asyncio.run(ensure_topics(services.kafka, [name], partitions=3))
    return name


def test_caught_up_group_is_ok_with_zero_lag(services, namespace, topic):
    group = f"{namespace.name}.caught-up"
    asyncio.run(produce(services.kafka, topic, {0: [now_ms()] * 4, 1: [now_ms()] * 7}))
    asyncio.run(commit(services.kafka, group, topic, {0: 4, 1: 7}))

    result = p95_lag("--group", group, "--json", "--window", "2", "--interval", "0.5")

    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    partitions = [row for row in rows if row["kind"] == "partition"]
    assert [
        (r["partition"], r["committed"], r["end"], r["lag"], r["lag_seconds"], r["status"]) for r in partitions
    ] == [
        (0, 4, 4, 0, 0.0, "OK"),
        (1, 7, 7, 0, 0.0, "OK"),
        (2, None, 0, 0, 0.0, "OK"),
    ]
    (summary,) = [row for row in rows if row["kind"] == "group"]
    assert summary == {
        "kind": "group",
        "group": group,
        "stage": None,
        "topic": None,
        "partition": None,
        "committed": None,
        "end": None,
        "lag": 0,
        "lag_seconds": 0.0,
        "status": "OK",
        "worst": "OK",
        "partitions": 3,
    }


def test_json_rows_match_offsets_computed_by_the_test(services, namespace, topic):
    behind, further = f"{namespace.name}.behind", f"{namespace.name}.further-behind"
    base = now_ms() - 100_000
    stamps = {0: [base + 1000 * i for i in range(5)], 1: [base + 500 * i for i in range(9)], 2: [base + 7000]}
    asyncio.run(produce(services.kafka, topic, stamps))
    # Partition 2 of `behind` never committed: it counts from the log start. Both groups lag on
    # partition 0 at different offsets, so each needs its own message read there.
    committed = {behind: {0: 2, 1: 9}, further: {0: 1, 1: 3, 2: 1}}
    for group, offsets in committed.items():
        asyncio.run(commit(services.kafka, group, topic, offsets))

    before = time.time()
    result = p95_lag(
        "--group", behind, "--group", further, "--topic", topic, "--json", "--window", "2", "--interval", "0.5"
    )
    after = time.time()

    assert result.returncode == 1, "groups with stuck partitions are not OK"
    rows = json.loads(result.stdout)
    # the fields on every row, plus what tells the rows apart (kind) and the pipeline stage
    assert all(set(row) == ROW_KEYS | {"kind", "stage"} for row in rows if row["kind"] == "partition")
    assert all(set(row) == SUMMARY_KEYS for row in rows if row["kind"] == "group")
    assert {row["kind"] for row in rows} == {"partition", "group"}
    for group, offsets in committed.items():
        partitions = {row["partition"]: row for row in rows if row["kind"] == "partition" and row["group"] == group}
        assert set(partitions) == {0, 1, 2}
        ages = []
        for partition, produced in stamps.items():
            row = partitions[partition]
            position = offsets.get(partition, 0)
            assert row["topic"] == topic
            assert row["committed"] == offsets.get(partition)
            assert row["end"] == len(produced)
            assert row["lag"] == len(produced) - position
            if row["lag"] == 0:
                assert row["lag_seconds"] == 0.0 and row["status"] == "OK"
            else:
                oldest = produced[position] / 1000
                assert before - oldest - 1 <= row["lag_seconds"] <= after - oldest + 1, (group, row)
                assert row["status"] == "STALL"  # lag > 0 and the offset did not move while we watched
            ages.append(row["lag_seconds"])
        (summary,) = [row for row in rows if row["kind"] == "group" and row["group"] == group]
        assert summary["lag"] == sum(len(produced) - offsets.get(p, 0) for p, produced in stamps.items())
        assert summary["lag_seconds"] == max(ages)
        assert (summary["status"], summary["worst"], summary["partitions"]) == ("ERR", "STALL", 3)
    assert [row["group"] for row in rows if row["kind"] == "group"] == [behind, further]


def test_lag_exits_non_zero_when_one_of_several_groups_is_not_ok(services, namespace, topic, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # the table's group names unfolded
    ok, lagging = f"{namespace.name}.all-read", f"{namespace.name}.one-stuck"
    asyncio.run(produce(services.kafka, topic, {0: [now_ms() - 10_000] * 3}))
    asyncio.run(commit(services.kafka, ok, topic, {0: 3}))
    asyncio.run(commit(services.kafka, lagging, topic, {0: 1}))
    options = ["--group", ok, "--group", lagging, "--topic", topic, "--window", "1", "--interval", "0.25"]

    as_json, as_table = p95_lag(*options, "--json"), p95_lag(*options)
    only_ok = p95_lag("--group", ok, "--topic", topic, "--json", "--window", "1", "--interval", "0.25")

    summaries = {row["group"]: row for row in json.loads(as_json.stdout) if row["kind"] == "group"}
    assert {group: row["status"] for group, row in summaries.items()} == {ok: "OK", lagging: "ERR"}
    assert summaries[lagging]["lag"] == 2 and summaries[ok]["lag"] == 0
    assert as_json.returncode == 1, as_json.stderr
    assert as_table.returncode == 1, as_table.stderr
    assert [line.count("ERR") for line in as_table.stdout.splitlines() if lagging in line] == [1]
    assert [line.count(" OK") for line in as_table.stdout.splitlines() if ok in line] == [1]
    assert only_ok.returncode == 0, only_ok.stderr


def test_paused_consumer_shows_growing_lag_and_turns_warn_then_stall_then_stop(services, namespace, topic):
    group = f"{namespace.name}.pausing"
    interval = 0.25

    async def scenario() -> tuple[list[LagSnapshot], list[LagSnapshot], float]:
        producer = AIOKafkaProducer(bootstrap_servers=services.kafka, linger_ms=0)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=services.kafka, group_id=group, enable_auto_commit=False, fetch_max_wait_ms=20
        )
        await producer.start()
        await consumer.start()
        consumer.assign([TopicPartition(topic, p) for p in range(3)])
        paused = asyncio.Event()

        async def keep_producing() -> None:
            while True:
                for partition in range(3):
                    await producer.send(topic, b"tick", partition=partition)
                await asyncio.sleep(0.05)

        async def consume_until_paused() -> None:
            while not paused.is_set():
                await consumer.getmany(timeout_ms=50)
                if not paused.is_set():
                    await consumer.commit()

        tasks = [asyncio.create_task(keep_producing()), asyncio.create_task(consume_until_paused())]
        try:
            async with OffsetReader(services.kafka) as reader:
                # The statuses are judged on wall time: size the window to how fast this machine
                # samples right now, so WARN (3 samples) comes well before STALL (half the window).
                calibration = LagMonitor(reader, [GroupTarget(group, (topic,))], rules=StatusRules())
                started = time.monotonic()
                for _ in range(4):
                    await sample_after(calibration, interval)
                step = (time.monotonic() - started) / 4
                rules = StatusRules(window_s=max(3.0, 12 * step), min_samples=3)
                monitor = LagMonitor(reader, [GroupTarget(group, (topic,))], rules=rules)
                before = [await sample_after(monitor, interval) for _ in range(6)]
                paused.set()
                paused_at, paused_mono = time.time(), time.monotonic()
                after: list[LagSnapshot] = []
                # Sample on wall time, not a count: STOP needs the window to pass, and sampling may
                # run faster than during the calibration (which paid for the first connections).
                deadline = paused_mono + 2 * rules.window_s + 10
                while time.monotonic() < deadline and not (after and all_stopped(after[-1])):
                    after.append(await sample_after(monitor, interval))
                return before, after, paused_at
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await consumer.stop()
            await producer.stop()

    before, after, paused_at = asyncio.run(scenario())

    assert all(snapshot.groups[0].lag < 30 for snapshot in before), "the consumer kept up before the pause"
    lags = [snapshot.groups[0].lag for snapshot in after]
    ages = [snapshot.groups[0].lag_seconds or 0.0 for snapshot in after]
    assert lags[-1] > lags[len(lags) // 2] > lags[0], f"lag in messages grows: {lags}"
    assert ages[-1] > ages[len(ages) // 2] > ages[0], f"lag in seconds grows: {ages}"
    assert ages[-1] == pytest.approx(after[-1].taken_at.timestamp() - paused_at, abs=1.0)
    for partition in range(3):
        seen = [next(p.status for p in s.partitions if p.partition == partition) for s in after]
        assert Status.WARN in seen and Status.STALL in seen and Status.STOP in seen, seen
        assert seen.index(Status.WARN) < seen.index(Status.STALL) < seen.index(Status.STOP), seen
        assert seen[-1] == Status.STOP
    groups = [snapshot.groups[0].status for snapshot in after]
    assert groups.index(Status.WARN) < groups.index(Status.ERR), groups


def test_rewinding_a_group_shows_rewind(services, namespace, topic):
    group = f"{namespace.name}.rewinding"
    base = now_ms() - 60_000
    asyncio.run(produce(services.kafka, topic, {0: [base + 1000 * i for i in range(20)]}))
    asyncio.run(commit(services.kafka, group, topic, {0: 20}))

    async def scenario() -> tuple[LagSnapshot, LagSnapshot]:
        async with OffsetReader(services.kafka) as reader:
            monitor = LagMonitor(reader, [GroupTarget(group, (topic,))], rules=StatusRules(window_s=10.0))
            caught_up = await monitor.sample()
            await commit(services.kafka, group, topic, {0: 5})
            return caught_up, await monitor.sample()

    caught_up, rewound = asyncio.run(scenario())

    assert caught_up.partitions[0].status == Status.OK and caught_up.partitions[0].lag == 0
    partition = rewound.partitions[0]
    assert (partition.committed, partition.end, partition.lag, partition.status) == (5, 20, 15, Status.REWIND)
    expected_age = rewound.taken_at.timestamp() - (base + 5000) / 1000
    assert partition.lag_seconds == pytest.approx(expected_age, abs=1.0)
    assert rewound.groups[0].status == Status.ERR and rewound.groups[0].worst == Status.REWIND


def test_lag_exporter_serves_the_figures_and_stops_on_sigterm(services, namespace, topic):
    group = f"{namespace.name}.exported"
    asyncio.run(produce(services.kafka, topic, {1: [now_ms() - 30_000] * 6}))
    asyncio.run(commit(services.kafka, group, topic, {1: 2}))
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "phoenix95",
            "lag",
            "--serve",
            "--group",
            group,
            "--port",
            str(port),
            "--interval",
            "0.5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ.copy(),
    )
    try:
        wait_until(lambda: port_open(port), timeout=30, what="lag exporter")
        values: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}

        def sampled() -> bool:
            values.clear()
            values.update(scrape(f"http://127.0.0.1:{port}/metrics"))
            return ("p95_lag_samples_total", frozenset()) in values and values[
                ("p95_lag_samples_total", frozenset())
            ] >= 1

        wait_until(sampled, timeout=30, what="a lag sample")
        labels = {"group": group, "stage": "", "topic": topic, "partition": "1"}
        assert values[("p95_consumer_lag_messages", frozenset(labels.items()))] == 4
        assert values[("p95_consumer_committed_offset", frozenset(labels.items()))] == 2
        assert values[("p95_consumer_lag_seconds", frozenset(labels.items()))] == pytest.approx(30, abs=5)
        assert values[("p95_consumer_group_lag_messages", frozenset({"group": group, "stage": ""}.items()))] == 4
        assert ("process_cpu_seconds_total", frozenset()) in values
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
    assert code == 0, process.stderr.read() if process.stderr else ""


def test_probe_reports_the_signal_path_lag_and_recovers_when_caught_up(services, namespace):
    topics = Topics(namespace.name)
    asyncio.run(ensure_topics(services.kafka, [topics.signals, topics.analysis, topics.market_prices], partitions=2))
    asyncio.run(produce(services.kafka, topics.signals, {0: [now_ms() - 45_000, now_ms() - 40_000]}))
    asyncio.run(produce(services.kafka, topics.analysis, {1: [now_ms() - 20_000]}))

    async def scenario() -> tuple[float, float, float]:
        probe = PipelineLagProbe(services.kafka, namespace.name, interval_s=0.2)  # analysis and risk groups
        await probe.start()
        try:
            lagging = probe.lag_seconds()  # measured before start() returned: no blind first decision
            await commit(services.kafka, topics.group("analysis"), topics.signals, {0: 2})
            partly = await settle(probe, lambda lag: lag < 30)
            await commit(services.kafka, topics.group("risk"), topics.analysis, {1: 1})
            recovered = await settle(probe, lambda lag: lag == 0)
            await probe.stop()  # a stage runtime stops and starts again after a failure
            await probe.start()
            return lagging, partly, min(recovered, await settle(probe, lambda lag: lag == 0))
        finally:
            await probe.stop()

    lagging, partly, recovered = asyncio.run(scenario())

    assert lagging == pytest.approx(45, abs=3)  # the analysis group's oldest unconsumed signal
    assert partly == pytest.approx(20, abs=3)  # then the risk group's oldest unconsumed analysis
    assert recovered == 0.0


def test_risk_worker_rejects_signals_as_stale_while_the_analysis_group_is_behind_then_recovers(
    services, namespace, monkeypatch
):
    limit = 2.0
    monkeypatch.setenv("P95_RISK__MAX_PIPELINE_LAG_S", str(limit))
    port = free_port()
    pipeline = Pipeline(namespace, stages=("risk",), web_ports={"risk": port})  # wall clock; no analysis worker
    topics = pipeline.topics
    analysis_group, risk_group = topics.group("analysis"), topics.group("risk")
    pipeline.start()
    try:
        # Signals nobody consumes: the analysis group is genuinely behind, by the age of the oldest.
        backlog = [now_ms() - 20_000, now_ms() - 19_000, now_ms() - 18_000]
        asyncio.run(produce(services.kafka, topics.signals, {0: backlog}))
        # The risk worker's /metrics exposes what its lag probe measured.
        lagging = wait_for_group_lag(port, analysis_group, lambda seconds: seconds > limit)
        stale = asyncio.run(decided_on(pipeline, fresh_analysis()))

        asyncio.run(commit(services.kafka, analysis_group, topics.signals, {0: len(backlog)}))  # caught up
        recovered = wait_for_group_lag(port, analysis_group, lambda seconds: seconds == 0)
        wait_for_group_lag(port, risk_group, lambda seconds: seconds == 0)  # it consumed the stale analysis too
        fresh = asyncio.run(decided_on(pipeline, fresh_analysis()))
    finally:
        pipeline.stop()

    assert lagging == pytest.approx(20, abs=5) and recovered == 0.0
    decision, reasons, details = stale
    assert decision == "REJECTED" and "SIGNAL_STALE" in reasons
    (lag_detail,) = [d for d in details if "pipeline lag" in d]
    measured = float(lag_detail.split("pipeline lag ")[1].split("s >")[0])
    assert measured > limit and measured == pytest.approx(20, abs=8), lag_detail
    assert lag_detail.endswith(f"> {limit:.1f}s")
    decision, reasons, details = fresh
    assert "SIGNAL_STALE" not in reasons and not [d for d in details if "pipeline lag" in d]
    assert decision == "APPROVED", details  # the same kind of signal the lagging pipeline refused


def fresh_analysis():
    return analyze(factories.signal(action="buy", confidence="0.92", price="1.1812", at=datetime.now(UTC)))


async def decided_on(pipeline: Pipeline, analysis) -> tuple[str, list[str], list[str]]:
    """Publish an analysis for the risk worker; its verdict as stored (decision, reasons, details)."""
    await pipeline.publish([analysis])
    found: list[tuple] = []

    async def verdict(db) -> bool:
        found[:] = await db.fetch(
            "SELECT decision, reasons, details FROM risk_verdicts WHERE signal_id = %s", (analysis.signal_id,)
        )
        return bool(found)

    await pipeline.wait_for(verdict, timeout=90, what=f"the verdict on {analysis.signal_id}")
    decision, reasons, details = found[0]
    return decision, list(reasons), list(details)


def wait_for_group_lag(port: int, group: str, done: Callable[[float], bool], timeout: float = 90) -> float:
    """The group's lag in seconds on a worker's /metrics, once `done` holds for it."""
    key = ("p95_consumer_group_lag_seconds", group)
    seen: dict[tuple[str, str], float] = {}

    def check() -> bool:
        seen.clear()
        for (name, labels), value in scrape(f"http://127.0.0.1:{port}/metrics").items():
            if name == key[0] and ("group", group) in labels:
                seen[key] = value
        return key in seen and done(seen[key])

    wait_until(check, timeout=timeout, interval=0.3, what=f"lag of {group} on :{port}")
    return seen[key]


async def settle(probe: PipelineLagProbe, done: Callable[[float], bool], timeout: float = 10.0) -> float:
    deadline = time.monotonic() + timeout
    while not done(probe.lag_seconds()) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return probe.lag_seconds()


def all_stopped(snapshot: LagSnapshot) -> bool:
    return all(partition.status == Status.STOP for partition in snapshot.partitions)


async def sample_after(monitor: LagMonitor, interval: float) -> LagSnapshot:
    await asyncio.sleep(interval)
    return await monitor.sample()
