"""`p95 tap` against the real broker: every start and stop mode, every filter, the JSON envelope,
undecodable messages, the output formats, reading in several processes, that reading joins no
consumer group, and `--trace` through a running pipeline (an approved and a rejected signal).

The command runs as a real process (`python -m phoenix95 tap ...`): stdout, stderr and exit codes
are what a user sees.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaProducer

from phoenix95.connectors.kafka_admin import ensure_topics, list_groups
from phoenix95.schemas.codec import Codec
from phoenix95.schemas.envelope import Event
from phoenix95.schemas.topics import Topics
from phoenix95.streams.producer import EventProducer
from tests.conftest import Namespace, make_namespace
from tests.pipeline import run_pipeline
from tests.unit.samples import samples

pytestmark = pytest.mark.integration

#: The timeline topic: 3 partitions x 30 records, one a minute from T0, in 3 batches per partition.
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)
PARTITIONS = 3
PER_PARTITION = 30
GARBAGE = b"\xc3\x01" + b"\x42" * 8 + b"bytes no schema wrote"


@dataclass
class Dataset:
    ns: Namespace
    topics: Topics
    timeline: str
    #: one signal's messages: signal, analysis, verdict (APPROVED), order, position event; and a price
    btc: list[Event]


def run_tap(ns: Namespace, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "phoenix95", "tap", *args],
        env={**os.environ, **ns.env},
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def tap_json(ns: Namespace, *args: str) -> list[dict]:
    result = run_tap(ns, *args, "--format", "json")
    assert result.returncode == 0, result.stderr.decode()
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def coordinates(records: list[dict]) -> list[tuple[int, int]]:
    return sorted((r["partition"], r["offset"]) for r in records)


def every(offsets: range, partitions: range = range(PARTITIONS)) -> list[tuple[int, int]]:
    return sorted((p, o) for p in partitions for o in offsets)


async def _produce_timeline(bootstrap: str, topic: str, *, start: int = 0, count: int = PER_PARTITION) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, enable_idempotence=False)
    await producer.start()
    try:
        for batch in range(3):
            sends = []
            for partition in range(PARTITIONS):
                for index in range(start + batch * count // 3, start + (batch + 1) * count // 3):
                    value = json.dumps({"i": index, "p": partition}).encode()
                    sends.append(
                        await producer.send(
                            topic,
                            value,
                            key=f"k{partition}".encode(),
                            partition=partition,
                            timestamp_ms=T0_MS + index * 60_000,
                        )
                    )
            await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def _publish(ns: Namespace, bootstrap: str) -> Dataset:
    topics = Topics(ns.name)
    timeline = f"{ns.name}.tap.timeline"
    await ensure_topics(bootstrap, [*topics.all()], partitions=4)
    await ensure_topics(bootstrap, [timeline], partitions=PARTITIONS)
    await _produce_timeline(bootstrap, timeline)

    btc_signal, analysis, verdict, order, tick, price, dead = samples()
    xrp_signal = btc_signal.model_copy(
        update={"signal_id": "xrp-signal-1", "event_id": "xrp-signal-1", "correlation_id": "xrp-signal-1"}
    )
    xrp_signal = xrp_signal.model_copy(update={"symbol": "XRPUSDT", "price": xrp_signal.price / 50000})
    xrp_verdict = verdict.model_copy(
        update={
            "event_id": "xrp-verdict-1",
            "verdict_id": "xrp-verdict-1",
            "signal_id": "xrp-signal-1",
            "correlation_id": "xrp-signal-1",
            "symbol": "XRPUSDT",
            "decision": "REJECTED",
            "reasons": ("CONFIDENCE_BELOW_MIN",),
            "plan": None,
        }
    )
    producer = EventProducer(bootstrap, topics, Codec())
    await producer.start()
    try:
        await producer.publish([btc_signal, xrp_signal, analysis, verdict, xrp_verdict, order, tick, price, dead])
        await producer.publish_raw(
            [
                (
                    topics.signals,
                    b"XRPUSDT",
                    b'{"id": "json-signal-1", "ticker": "BINANCE:xrpusdt.P", "price": 1.2}',
                    [],
                ),
                (topics.signals, b"BTCUSDT", GARBAGE, [("origin", b"test")]),
            ]
        )
    finally:
        await producer.stop()
    return Dataset(ns, topics, timeline, [btc_signal, analysis, verdict, order, tick, price])


@pytest.fixture(scope="module")
def data(services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dataset]:
    """One namespace for the module: its topics are written once and only read by the tests."""
    ns = make_namespace(services, tmp_path_factory.mktemp("tap") / "home", P95_LOG_LEVEL="WARNING")
    yield asyncio.run(_publish(ns, services.kafka))


# -- where to start and stop -------------------------------------------------------------------------


def test_exit_at_end_reads_every_partition_from_the_beginning_in_order(data):
    records = tap_json(data.ns, data.timeline, "--exit-at-end")
    assert coordinates(records) == every(range(PER_PARTITION))
    for partition in range(PARTITIONS):
        offsets = [r["offset"] for r in records if r["partition"] == partition]
        assert offsets == sorted(offsets)
    first = next(r for r in records if (r["partition"], r["offset"]) == (1, 4))
    assert first["value"] == {"i": 4, "p": 1}
    assert first["timestamp"] == T0_MS + 4 * 60_000


def test_from_an_offset_starts_each_partition_there(data):
    assert coordinates(tap_json(data.ns, data.timeline, "-e", "--from", "25")) == every(range(25, 30))


def test_from_minus_n_reads_the_last_n_of_each_partition(data):
    assert coordinates(tap_json(data.ns, data.timeline, "-e", "--from", "-3")) == every(range(27, 30))


def test_from_end_with_exit_at_end_shows_nothing_and_succeeds(data):
    assert tap_json(data.ns, data.timeline, "-e", "--from", "end") == []


@pytest.mark.parametrize(
    "start",
    [
        (T0 + timedelta(minutes=10, seconds=30)).isoformat(),  # between records 10 and 11
        str(T0_MS + 11 * 60_000),  # exactly record 11, epoch ms
        "2026-01-05T09:10:30Z",
    ],
)
def test_from_a_time_starts_at_the_first_record_at_or_after_it(data, start):
    # The records' timestamps are hours before the broker appended them: Tansu's own offset-for-time
    # answers by append time (offset 0 here), which the lookup must catch.
    assert coordinates(tap_json(data.ns, data.timeline, "-e", "--from", start)) == every(range(11, 30))


def test_until_stops_after_the_last_record_at_or_before_it_without_exit_at_end(data):
    records = tap_json(data.ns, data.timeline, "--from", "5", "--until", "2026-01-05T09:20:00Z")
    assert coordinates(records) == every(range(5, 21))


def test_partition_option_reads_only_those_partitions(data):
    records = tap_json(data.ns, data.timeline, "-e", "-p", "0", "--partition", "2")
    assert coordinates(records) == every(range(PER_PARTITION), partitions=range(0, 3, 2))
    result = run_tap(data.ns, data.timeline, "-e", "-p", "7")
    assert result.returncode == 2 and b"no partition 7" in result.stderr


def test_count_stops_after_that_many_records_while_following(data):
    records = tap_json(data.ns, data.timeline, "--count", "7")  # no -e: following, the count stops it
    assert len(records) == 7


def live_topic(data: Dataset, services, name: str) -> str:
    """A topic of its own for a test that writes while the tap runs (the timeline stays as it is)."""
    topic = f"{data.ns.name}.tap.{name}"
    asyncio.run(ensure_topics(services.kafka, [topic], partitions=PARTITIONS))
    asyncio.run(_produce_timeline(services.kafka, topic, count=3))
    return topic


def test_follow_shows_records_written_after_the_start(data, services):
    topic = live_topic(data, services, "follow")
    process = subprocess.Popen(
        [sys.executable, "-m", "phoenix95", "tap", topic, "--from", "end", "--follow", "-c", "6", "-F", "json"],
        env={**os.environ, **data.ns.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_line(process, b"following")  # start offsets are fixed: what is written now is read
        asyncio.run(_produce_timeline(services.kafka, topic, start=100, count=3))
        out, _err = process.communicate(timeout=60)
    finally:
        process.kill()
    records = [json.loads(line) for line in out.decode().splitlines()]
    assert process.returncode == 0
    assert len(records) == 6  # 9 were written after the start; the count stops it at 6
    assert {r["value"]["i"] for r in records} <= {100, 101, 102}
    for partition in range(PARTITIONS):
        values = [r["value"]["i"] for r in records if r["partition"] == partition]
        assert values == sorted(values)


def _wait_for_line(process: subprocess.Popen[bytes], text: bytes, timeout: float = 60) -> bytes:
    assert process.stderr is not None
    deadline = time.monotonic() + timeout
    seen = b""
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        seen += line
        if text in line:
            return line
        if not line and process.poll() is not None:
            break
    raise AssertionError(f"{text!r} never appeared on stderr: {seen.decode()}")


# -- decoding and the JSON envelope -------------------------------------------------------------------


def test_json_envelope_of_our_avro_has_coordinates_headers_and_the_decoded_record(data):
    order = data.btc[3]
    records = tap_json(data.ns, data.topics.orders, "-e")
    assert len(records) == 1
    record = records[0]
    assert list(record) == ["topic", "partition", "offset", "timestamp", "key", "headers", "schema", "value"]
    assert record["topic"] == data.topics.orders and record["key"] == "BTCUSDT"
    assert record["headers"] == {"p95-schema": "phoenix95.Order.v2", "p95-correlation-id": order.correlation_id}
    assert record["schema"] == "phoenix95.Order.v2"
    assert record["value"]["order_id"] == order.order_id
    assert record["value"]["fill"]["price"] == format(order.fill.price, "f")
    assert abs(record["timestamp"] - time.time() * 1000) < 3_600_000


def test_undecodable_and_json_messages_are_shown_never_a_crash(data):
    records = tap_json(data.ns, data.topics.signals, "-e")
    by_schema = {r["schema"]: r for r in records}
    assert set(by_schema) == {"phoenix95.Signal.v1", "json", None}
    bad = by_schema[None]
    assert bad["value"] is None and base64.b64decode(bad["raw"]) == GARBAGE
    assert bad["error"].startswith("SCHEMA_MISMATCH: unknown schema fingerprint")
    assert by_schema["json"]["value"]["id"] == "json-signal-1"


def test_pretty_format_prints_a_block_per_record_with_a_metadata_line(data):
    result = run_tap(data.ns, data.topics.risk_verdicts, "-e", "--format", "pretty", "--no-color")
    assert result.returncode == 0
    text = result.stdout.decode()
    headlines = [line for line in text.splitlines() if line.startswith(data.topics.risk_verdicts)]
    assert len(headlines) == 2
    assert all("phoenix95.RiskVerdict.v1" in line and "key " in line for line in headlines)
    assert "REJECTED" in text and "APPROVED" in text and "\x1b[" not in text


def test_raw_format_prints_the_value_bytes(data):
    result = run_tap(data.ns, data.topics.signals, "-e", "--format", "raw", "--header", "origin=test")
    assert result.returncode == 0
    assert result.stdout == GARBAGE + b"\n"


def test_fields_select_what_is_shown(data):
    records = tap_json(data.ns, data.topics.risk_verdicts, "-e", "--fields", "symbol,decision,plan.leverage,$offset")
    assert sorted((r["value"]["symbol"], r["value"]["decision"]) for r in records) == [
        ("BTCUSDT", "APPROVED"),
        ("XRPUSDT", "REJECTED"),
    ]
    assert all(set(r["value"]) == {"symbol", "decision", "plan.leverage", "$offset"} for r in records)


# -- filters ---------------------------------------------------------------------------------------


def test_key_filter_matches_the_record_key(data):
    records = tap_json(data.ns, data.topics.signals, "-e", "--key", "BTCUSDT")
    assert {r["key"] for r in records} == {"BTCUSDT"} and len(records) == 2  # the Avro signal and the garbage


def test_symbol_filter_reads_the_symbol_of_every_kind_of_message(data):
    records = tap_json(data.ns, "all", "-e", "--symbol", "xrpusdt")
    assert sorted(r["schema"] for r in records) == ["json", "phoenix95.RiskVerdict.v1", "phoenix95.Signal.v1"]


def test_signal_filter_follows_one_signal_through_every_topic(data):
    signal = data.btc[0]
    records = tap_json(data.ns, "all", "-e", "--signal", signal.signal_id)
    assert sorted(r["schema"] for r in records) == [
        "phoenix95.Analysis.v1",
        "phoenix95.Order.v2",
        "phoenix95.PositionEvent.v1",
        "phoenix95.PositionEvent.v1",
        "phoenix95.RiskVerdict.v1",
        "phoenix95.Signal.v1",
    ]
    # the position event is on the ticks and (the first of its position) on the lifecycle topic too
    assert sorted(data.topics.base(r["topic"]) for r in records if r["schema"].startswith("phoenix95.Position")) == [
        "p95.positions.lifecycle",
        "p95.positions.ticks",
    ]
    assert all(r["value"]["correlation_id"] == signal.signal_id for r in records)


def test_signal_filter_finds_a_json_signal_by_its_own_id(data):
    records = tap_json(data.ns, data.topics.signals, "-e", "--signal", "json-signal-1")
    assert [r["schema"] for r in records] == ["json"]


def test_header_filter_matches_name_and_value_or_presence(data):
    assert [r["schema"] for r in tap_json(data.ns, "all", "-e", "-H", "p95-schema=phoenix95.Order.v2")] == [
        "phoenix95.Order.v2"
    ]
    assert [r["value"] for r in tap_json(data.ns, "all", "-e", "--header", "origin")] == [None]


def test_where_filter_reads_nested_decimal_fields(data):
    verdict = data.btc[2]
    expression = f'plan.notional > 100 and decision == "APPROVED" and signal_id == "{verdict.signal_id}"'
    records = tap_json(data.ns, data.topics.risk_verdicts, "-e", "--where", expression)
    assert [r["value"]["verdict_id"] for r in records] == [verdict.verdict_id]
    assert tap_json(data.ns, data.topics.risk_verdicts, "-e", "-w", "plan.notional > 100000000") == []


def test_bad_where_expression_is_reported_with_its_column(data):
    result = run_tap(data.ns, data.topics.risk_verdicts, "-e", "--where", "plan.notional >")
    assert result.returncode == 2
    assert b"column 16" in result.stderr and b"Traceback" not in result.stderr


def test_stage_name_reads_the_topic_that_stage_consumes(data):
    records = tap_json(data.ns, "risk", "-e")
    assert [r["topic"] for r in records] == [data.topics.analysis]


def test_unknown_topic_is_an_error_listing_what_exists(data):
    result = run_tap(data.ns, "no.such.topic", "-e")
    assert result.returncode == 2 and b"no topic 'no.such.topic'" in result.stderr


# -- reading ---------------------------------------------------------------------------------------


def test_several_processes_keep_each_partition_in_order_and_lines_whole(data):
    records = tap_json(data.ns, data.timeline, "-e", "--jobs", "3")
    assert coordinates(records) == every(range(PER_PARTITION))
    for partition in range(PARTITIONS):
        assert [r["value"]["i"] for r in records if r["partition"] == partition] == list(range(PER_PARTITION))


def test_aiokafka_fallback_reads_the_same_as_confluent_kafka(data):
    confluent = tap_json(data.ns, "all", "-e", "--client", "confluent")
    fallback = tap_json(data.ns, "all", "-e", "--client", "aiokafka")
    assert sorted(map(json.dumps, confluent)) == sorted(map(json.dumps, fallback))
    assert len(confluent) == 12  # 9 events, the position event's lifecycle copy and 2 raw messages


def test_without_confluent_kafka_and_orjson_the_tap_falls_back_to_aiokafka_and_json(data, tmp_path):
    for missing in ("confluent_kafka", "orjson"):  # packages that fail to import, shadowing the real ones
        (tmp_path / missing).mkdir()
        (tmp_path / missing / "__init__.py").write_text(f"raise ImportError('{missing} is not installed')\n")
    env = {**data.ns.env, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "phoenix95", "tap", "all", "-e", "-F", "json"],
        env={**os.environ, **env},
        capture_output=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert b"aiokafka" in result.stderr
    fallback = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert sorted(map(json.dumps, fallback)) == sorted(map(json.dumps, tap_json(data.ns, "all", "-e")))


def test_closed_pipe_ends_the_tap_quietly_with_success(data, services):
    topic = live_topic(data, services, "pipe")
    process = subprocess.Popen(
        [sys.executable, "-m", "phoenix95", "tap", topic, "--from", "end", "-F", "json"],
        env={**os.environ, **data.ns.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_line(process, b"following")
        assert process.stdout is not None
        process.stdout.close()  # the reader goes away, like `| head`
        asyncio.run(_produce_timeline(services.kafka, topic, start=200, count=3))
        _out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, err.decode()
    assert b"Traceback" not in err and b"BrokenPipe" not in err


def test_reading_joins_no_consumer_group_and_commits_nothing(data, services):
    before = set(asyncio.run(list_groups(services.kafka)))
    tap_json(data.ns, "all", "-e", "--client", "confluent")
    tap_json(data.ns, "all", "-e", "--client", "aiokafka")
    tap_json(data.ns, data.timeline, "-e", "--from", "2026-01-05T09:10:00Z")
    after = set(asyncio.run(list_groups(services.kafka)))
    assert not {group for group in after - before if data.ns.name in group or "tap" in group}


# -- --trace through a running pipeline ---------------------------------------------------------------


@pytest.fixture
def pipeline(namespace, monkeypatch):
    yield from run_pipeline(namespace, monkeypatch, clock="event")


async def every_stage_committed_everything(pipeline) -> bool:
    """Each stage's group has committed every partition of its inputs up to the end."""
    from phoenix95.connectors.kafka_admin import committed_offsets, end_offsets
    from phoenix95.streams.stages import SPECS

    bootstrap = pipeline.settings.kafka.bootstrap_servers
    for spec in SPECS:
        inputs = [pipeline.topics.name(base) for base in spec.inputs]
        ends = await end_offsets(bootstrap, inputs)
        committed = await committed_offsets(bootstrap, pipeline.topics.group(spec.name), inputs)
        if any(committed.get(tp, 0) < end for tp, end in ends.items() if end > 0):
            return False
    return True


def trace(ns: Namespace, signal_id: str) -> dict:
    result = run_tap(ns, "--trace", signal_id, "--format", "json")
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


def test_trace_follows_an_approved_signal_to_its_position_and_a_rejected_one_to_its_verdict(pipeline):
    from phoenix95.connectors.market_data import bundled_candle_events
    from tests import factories

    prices = bundled_candle_events("XRPUSDT", "5m", namespace=pipeline.ns.name)[:60]
    start = prices[0].ts_event
    approved = factories.signal(action="buy", confidence="0.9", price=prices[24].price, at=start + timedelta(hours=2))
    rejected = factories.signal(action="buy", confidence="0.2", price=prices[30].price, at=start + timedelta(hours=2.5))
    timeline = sorted([*prices, approved, rejected], key=lambda e: (e.ts_event, e.SCHEMA_NAME))

    async def settle() -> None:
        await pipeline.publish(timeline)

        async def done(db) -> bool:
            verdicts = await pipeline.count(db, "SELECT COUNT(*) FROM risk_verdicts")
            positions = await pipeline.count(db, "SELECT COUNT(*) FROM positions")
            return verdicts == 2 and positions == 1 and await every_stage_committed_everything(pipeline)

        await pipeline.wait_for(done, what="both signals decided, one position, every stage committed")

    asyncio.run(settle())

    report = trace(pipeline.ns, approved.signal_id)
    steps = {step["topic"].removeprefix(pipeline.ns.name + "."): step for step in report["steps"]}
    assert [len(steps[t]["sightings"]) > 0 for t in ("p95.signals", "p95.analysis", "p95.risk.verdicts")] == [True] * 3
    assert steps["p95.risk.verdicts"]["sightings"][0]["value"]["decision"] == "APPROVED"
    assert steps["p95.orders"]["sightings"][0]["value"]["status"] == "filled"
    assert steps["p95.positions.ticks"]["sightings"][0]["value"]["kind"] == "opened"
    for topic in ("p95.signals", "p95.analysis", "p95.risk.verdicts", "p95.orders"):
        assert steps[topic]["processed"] is True, f"{topic}: {steps[topic]}"
        sighting = steps[topic]["sightings"][0]
        assert sighting["committed"] > sighting["offset"]
    assert report["where"].startswith("position ")
    assert report["dead_letters"] == []

    report = trace(pipeline.ns, rejected.signal_id)
    steps = {step["topic"].removeprefix(pipeline.ns.name + "."): step for step in report["steps"]}
    verdict = steps["p95.risk.verdicts"]["sightings"][0]
    assert verdict["value"]["decision"] == "REJECTED"
    assert "CONFIDENCE_BELOW_MIN" in verdict["value"]["reasons"]
    assert steps["p95.orders"]["sightings"] == [] and steps["p95.positions.ticks"]["sightings"] == []
    assert steps["p95.risk.verdicts"]["processed"] is True  # execution read the verdict and moved on
    assert report["where"].startswith("rejected by risk: ") and "CONFIDENCE_BELOW_MIN" in report["where"]

    pretty = run_tap(pipeline.ns, "--trace", rejected.signal_id, "--format", "pretty", "--no-color")
    assert pretty.returncode == 0
    assert b"where: rejected by risk" in pretty.stdout


def test_trace_of_an_unknown_signal_says_so_and_fails(data):
    result = run_tap(data.ns, "--trace", "no-such-signal", "--format", "json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["where"] == "signal no-such-signal not found on any topic"
