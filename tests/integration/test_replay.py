"""Replay: deterministic, the same digest in-process and through the real Kafka pipeline, what-ifs that
change the results without touching the live stores, paced kafka-mode runs, the summary's keys, and
cleanup of a kafka-mode run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from aiokafka import AIOKafkaConsumer
from typer.testing import CliRunner

from phoenix95.cli.main import app
from phoenix95.connectors.kafka_admin import ensure_topics, list_groups, message_counts, partitions_of
from phoenix95.connectors.market_data import tick_event
from phoenix95.domain.execution import MarketTick
from phoenix95.replay.runner import sample_signals_path
from phoenix95.schemas.topics import Topics
from phoenix95.settings import Settings, get_settings
from phoenix95.storage.postgres import Database, migrate
from tests.conftest import Namespace
from tests.services import ServiceSet

pytestmark = pytest.mark.integration

LIVE_TABLES = ("signals", "risk_verdicts", "orders", "trades", "positions")

#: What `p95 replay --json` prints at least (the issue's list, and the rest of its summary).
SUMMARY_KEYS = {
    "events",
    "signals",
    "orders",
    "trades",
    "pnl",
    "max_drawdown",
    "win_rate",
    "sharpe",
    "digest",
    "elapsed_s",
    "events_per_s",
    "approved",
    "rejected",
    "rejected_by_reason",
    "fees",
    "funding",
    "sortino",
    "exposure",
    "pnl_by_symbol",
    "protections",
}

#: The equity protections off (DAILY_LOSS_LIMIT and MAX_DRAWDOWN halt the sample after three days
#: with their defaults): the whole sample trades.
EQUITY_PROTECTIONS_OFF = ("--set", "compliance.max_drawdown_pct=0", "--set", "compliance.daily_loss_limit_pct=0")


def replay_cli(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["replay", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def replay(*args: str) -> dict[str, Any]:
    """The bundled sample (300 signals over 1,999 real XRPUSDT candles)."""
    return replay_cli("--signals", "sample", *args)


@pytest.fixture
def kafka_runs(namespace: Namespace) -> Iterator[list[str]]:
    """Run ids of the kafka-mode runs a test makes; whatever is left of them is cleaned up after."""
    from phoenix95.replay.kafka_mode import clean

    runs: list[str] = []
    yield runs
    for run_id in runs:
        with contextlib.suppress(Exception):
            asyncio.run(clean(Settings(), run_id))


# -- the live stores of the test's namespace ------------------------------------------------------


@dataclass
class LiveStores:
    services: ServiceSet
    ns: Namespace

    def snapshot(self) -> dict[str, Any]:
        """Row counts of the live tables, every Redis key of the namespace with its value, and the
        message count of every topic of the namespace."""
        return {
            "tables": asyncio.run(table_counts(self.services.postgres, self.ns.schema)),
            "redis": redis_values(self.services.redis, self.ns.redis_prefix),
            "topics": asyncio.run(message_counts(self.services.kafka, Topics(self.ns.name).all())),
        }


async def table_counts(url: str, schema: str, tables: Sequence[str] = LIVE_TABLES) -> dict[str, int]:
    async with Database(url, schema=schema) as db:
        return {table: (await db.fetch(f"SELECT COUNT(*) FROM {table}"))[0][0] for table in tables}


def redis_values(url: str, prefix: str) -> dict[bytes, bytes | None]:
    client = redis.Redis.from_url(url)
    try:
        return {key: client.dump(key) for key in sorted(client.scan_iter(match=f"{prefix}*", count=1000))}
    finally:
        client.close()


@pytest.fixture
def live_stores(services: ServiceSet, namespace: Namespace) -> LiveStores:
    """The namespace's live schema and Redis keys, holding one signal, verdict, order, trade and
    position written by the stages' own sink (keys made persistent, so nothing expires mid-test)."""
    from phoenix95.storage.redis_state import RedisState
    from phoenix95.storage.sink import StoreSink
    from tests.integration.test_storage import sample_outcomes

    async def seed() -> None:
        await migrate(services.postgres, namespace.schema)
        async with Database(services.postgres, schema=namespace.schema) as db:
            state = RedisState.from_url(services.redis, prefix=namespace.redis_prefix)
            try:
                assert await StoreSink(db, state, None).persist("test", sample_outcomes()) == []
            finally:
                await state.close()

    asyncio.run(seed())
    client = redis.Redis.from_url(services.redis)
    for key in client.scan_iter(match=f"{namespace.redis_prefix}*", count=1000):
        client.persist(key)
    client.close()
    stores = LiveStores(services, namespace)
    seeded = stores.snapshot()
    assert all(count >= 1 for count in seeded["tables"].values()), seeded["tables"]
    assert seeded["redis"], "the sink wrote no Redis key"
    return stores


# -- a short input: a few seconds of event time ---------------------------------------------------

SHORT_START = datetime(2021, 11, 15, 12, 0, tzinfo=UTC)
#: Seconds of event time between the first and the last event of the short input.
SHORT_SPAN_S = 6


def short_input(ns: Namespace, services: ServiceSet, directory: Path) -> list[str]:
    """Arguments for a replay of two signals over prices a second apart, SHORT_SPAN_S seconds of
    event time in all: the signals in a file, the prices on the namespace's market prices topic."""
    from phoenix95.schemas.codec import Codec
    from phoenix95.streams.producer import EventProducer

    ticks = [
        MarketTick("XRPUSDT", SHORT_START + timedelta(seconds=second), Decimal("1.19") + Decimal("0.001") * second)
        for second in range(SHORT_SPAN_S + 1)
    ]
    topics = Topics(ns.name)

    async def publish() -> None:
        await ensure_topics(services.kafka, [topics.market_prices], partitions=2)
        producer = EventProducer(services.kafka, topics, Codec())
        await producer.start()
        try:
            await producer.publish([tick_event(t, namespace=ns.name) for t in ticks])
        finally:
            await producer.stop()

    asyncio.run(publish())
    signals = directory / "short-signals.jsonl"
    lines = [
        {"signal_id": "short-1", "symbol": "XRPUSDT", "action": "buy", "price": "1.19", "confidence": "0.95"},
        {"signal_id": "short-2", "symbol": "XRPUSDT", "action": "sell", "price": "1.193", "confidence": "0.95"},
    ]
    for line, second in zip(lines, (0.5, 3.5), strict=True):
        line["source_timestamp"] = (SHORT_START + timedelta(seconds=second)).isoformat()
    signals.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return ["--signals", str(signals), "--prices-topic", topics.market_prices]


async def records_of(bootstrap: str, topics: Sequence[str]) -> list[tuple[int, datetime]]:
    """(record timestamp ms, event time) of every record of the topics."""
    from phoenix95.connectors.kafka_admin import end_offsets
    from phoenix95.schemas.codec import Codec
    from phoenix95.schemas.messages import MarketPrice

    codec = Codec()
    ends = {tp: end for tp, end in (await end_offsets(bootstrap, topics)).items() if end > 0}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    found: list[tuple[int, datetime]] = []
    try:
        await partitions_of(consumer, topics)
        consumer.assign(list(ends))
        for tp in ends:
            consumer.seek(tp, 0)
        pending = set(ends)
        for _ in range(100):
            if not pending:
                break
            for tp, records in (await consumer.getmany(*pending, timeout_ms=500)).items():
                for record in records:
                    assert record.value is not None
                    if tp.topic.endswith("p95.market.prices"):
                        event: Any = codec.decode(record.value, MarketPrice)
                    else:
                        event = codec.decode_signal(record.value, headers=record.headers, fallback_id="-")
                    found.append((record.timestamp, event.ts_event))
                    if record.offset >= ends[tp] - 1:
                        pending.discard(tp)
        assert not pending, f"could not read {pending}"
    finally:
        await consumer.stop()
    return sorted(found)


# -- tests ----------------------------------------------------------------------------------------


def test_replay_is_deterministic_and_kafka_mode_matches_inprocess(namespace, services, live_stores, kafka_runs):
    first = replay()
    again = replay()
    assert first["digest"] == again["digest"]
    assert first["orders"] >= 20 and first["trades"] >= 20
    assert set(first["close_reasons"]) >= {"stop_loss", "take_profit"}
    # the default protections trip on the sample (the digest holds the trips) and halt what follows
    assert {trip["reason"] for trip in first["protections"]} == {"DAILY_LOSS_LIMIT", "MAX_DRAWDOWN"}
    assert first["rejected_by_reason"]["TRADING_HALTED"] > 0

    live_before = live_stores.snapshot()
    kafka = replay("--mode", "kafka")
    kafka_runs.append(kafka["run_id"])
    assert kafka["digest"] == first["digest"]
    assert (kafka["orders"], kafka["trades"], kafka["pnl"]) == (first["orders"], first["trades"], first["pnl"])
    assert kafka["protections"] == first["protections"]
    assert kafka["rejected_by_reason"] == first["rejected_by_reason"]
    assert asyncio.run(table_counts(services.postgres, kafka["run_id"]))["orders"] == first["orders"]
    assert live_stores.snapshot() == live_before


def test_kafka_mode_matches_inprocess_with_several_symbols_interleaved(tmp_path, kafka_runs):
    """Three symbols, their signals interleaved in time: on the event clock the risk stage must see
    the analyses in event-time order across symbols (one partition for signals and analyses), or a
    signal decided before an earlier one of another symbol arrived would be sized on another book."""
    import random

    sample = [json.loads(line) for line in sample_signals_path().read_text().splitlines() if line.strip()]
    rng = random.Random(17)
    lines = []
    for index, item in enumerate(sample):
        lines.append(item)
        if index % 2 == 0:
            symbol, price = rng.choice([("BTCUSDT", "60000"), ("ETHUSDT", "3000")])
            lines.append(
                {
                    "time": item["time"],
                    "ticker": f"BINANCE:{symbol}.P",
                    "action": rng.choice(["buy", "sell"]),
                    "close": price,
                    "confidence": rng.choice([0.6, 0.8, 0.9, 0.95]),
                    "strategy": f"multi-{index % 3}",
                    "interval": "5",
                }
            )
    signals = tmp_path / "multi.jsonl"
    signals.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    args = [
        "--signals",
        str(signals),
        "--prices",
        "XRPUSDT-5m",
        "--simulate",
        "BTCUSDT:60000",
        "--simulate",
        "ETHUSDT:3000",
    ]
    inprocess = replay_cli(*args)
    assert set(inprocess["pnl_by_symbol"]) == {"XRPUSDT", "BTCUSDT", "ETHUSDT"} and inprocess["trades"] > 30
    # closes of three symbols feed the protections: the risk stage learns them symbol by symbol,
    # the in-process replay in time order, and both must count them in the same canonical order
    assert inprocess["protections"]
    kafka = replay_cli(*args, "--mode", "kafka")
    kafka_runs.append(kafka["run_id"])
    assert kafka["digest"] == inprocess["digest"]
    assert kafka["protections"] == inprocess["protections"]
    assert (kafka["orders"], kafka["trades"], kafka["pnl"]) == (
        inprocess["orders"],
        inprocess["trades"],
        inprocess["pnl"],
    )


def test_a_leverage_what_if_alone_changes_the_results_and_leaves_the_live_stores_untouched(live_stores):
    before = live_stores.snapshot()
    base = replay()
    what_if = replay("--set", "risk.leverage=10")
    assert what_if["settings"] == {"P95_RISK__LEVERAGE": "10"}
    assert what_if["digest"] != base["digest"]
    assert what_if["pnl"] != base["pnl"]
    assert what_if["fees"] != base["fees"]
    assert replay("--set", "risk.leverage=10")["digest"] == what_if["digest"]  # a what-if is deterministic too
    assert live_stores.snapshot() == before


def test_a_price_collar_what_if_rejects_in_the_inprocess_replay_as_in_the_risk_stage(live_stores):
    # the in-process replay decides with the risk stage's config (streams.wiring.trading_config),
    # so compliance.price_collar_bps applies there as it does to the workers of a kafka-mode run
    base = replay()
    collared = replay("--set", "compliance.price_collar_bps=5")
    assert "PRICE_COLLAR" not in base["rejected_by_reason"]
    assert collared["rejected_by_reason"]["PRICE_COLLAR"] > 0
    assert collared["digest"] != base["digest"]


def test_a_kafka_mode_what_if_runs_in_its_own_namespace_and_leaves_the_live_stores_untouched(
    services, live_stores, kafka_runs
):
    before = live_stores.snapshot()
    base = replay()
    # a compliance what-if: the equity protections off, so the whole sample trades (the full
    # trading path through the workers) with only the stop-loss guard left to trip
    inprocess = replay(*EQUITY_PROTECTIONS_OFF)
    kafka = replay("--mode", "kafka", *EQUITY_PROTECTIONS_OFF)
    kafka_runs.append(kafka["run_id"])
    # the workers ran with the override: the what-if's results, not the base's
    assert kafka["digest"] == inprocess["digest"] != base["digest"]
    assert (kafka["pnl"], kafka["fees"]) == (inprocess["pnl"], inprocess["fees"]) != (base["pnl"], base["fees"])
    assert kafka["orders"] == inprocess["orders"] > 100 > base["orders"]
    assert kafka["protections"] == inprocess["protections"]
    assert {trip["reason"] for trip in kafka["protections"]} == {"STOPLOSS_GUARD"}
    assert kafka["settings"] == {"P95_COMPLIANCE__MAX_DRAWDOWN_PCT": "0", "P95_COMPLIANCE__DAILY_LOSS_LIMIT_PCT": "0"}
    assert set(kafka) >= SUMMARY_KEYS
    # its rows, keys and messages are in its own namespace ...
    run_id = kafka["run_id"]
    assert asyncio.run(table_counts(services.postgres, run_id))["orders"] == kafka["orders"]
    assert redis_values(services.redis, f"{run_id}:s4:")
    assert asyncio.run(message_counts(services.kafka, Topics(run_id).all()))[Topics(run_id).signals] == 300
    # ... and the live ones are as they were
    assert live_stores.snapshot() == before


def test_the_json_summary_has_every_key_the_issue_lists():
    summary = replay(*EQUITY_PROTECTIONS_OFF)  # the whole sample: several positions open at once
    assert set(summary) >= SUMMARY_KEYS, SUMMARY_KEYS - set(summary)
    assert summary["events"] == summary["signals"] + summary["prices"] == 300 + 1999
    assert summary["approved"] + summary["rejected"] == summary["signals"]
    assert sum(summary["rejected_by_reason"].values()) >= summary["rejected"] > 0
    assert summary["orders"] >= summary["trades"] > 0
    assert sum(Decimal(s["pnl"]) for s in summary["pnl_by_symbol"].values()) == Decimal(summary["pnl"])
    assert Decimal(summary["fees"]) > 0 and Decimal(summary["funding"]) != 0
    assert 0 < summary["win_rate"] < 1 and 0 < summary["max_drawdown"] < 1
    assert isinstance(summary["sharpe"], float) and isinstance(summary["sortino"], float)
    assert 0 < summary["exposure"] <= 1 < summary["average_open_positions"]
    assert len(summary["digest"]) == 64
    assert [set(trip) for trip in summary["protections"]] == [
        {"reason", "at", "subject", "until", "halt", "message"}
    ] * len(summary["protections"])
    assert summary["events_per_s"] == pytest.approx(summary["events"] / summary["elapsed_s"], rel=0.05)


def test_speed_1_paces_a_kafka_mode_run_by_event_time_and_speed_0_does_not_wait(
    namespace, services, kafka_runs, tmp_path
):
    args = short_input(namespace, services, tmp_path)
    inprocess = replay_cli(*args)
    assert inprocess["events"] == 2 + SHORT_SPAN_S + 1

    paced = replay_cli(*args, "--mode", "kafka", "--speed", "1")
    kafka_runs.append(paced["run_id"])
    run_topics = Topics(paced["run_id"])
    records = asyncio.run(records_of(services.kafka, [run_topics.signals, run_topics.market_prices]))
    assert len(records) == inprocess["events"]
    first_written, first_event = records[0]
    for written, event in records:
        # no event is sent before its time (scaled by the speed) has come
        assert written - first_written >= (event - first_event).total_seconds() * 1000 - 100
    assert paced["publish_s"] >= SHORT_SPAN_S * 0.9
    assert paced["elapsed_s"] >= SHORT_SPAN_S * 0.9

    fast = replay_cli(*args, "--mode", "kafka", "--speed", "0")
    kafka_runs.append(fast["run_id"])
    run_topics = Topics(fast["run_id"])
    records = asyncio.run(records_of(services.kafka, [run_topics.signals, run_topics.market_prices]))
    assert records[-1][0] - records[0][0] < SHORT_SPAN_S * 1000 / 2
    assert fast["publish_s"] < SHORT_SPAN_S / 2

    assert paced["digest"] == fast["digest"] == inprocess["digest"]
    assert paced["orders"] == fast["orders"] == inprocess["orders"] >= 1


def test_clean_removes_a_kafka_runs_topics_groups_schema_and_redis_keys(namespace, services, kafka_runs, tmp_path):
    run = replay_cli(*short_input(namespace, services, tmp_path), "--mode", "kafka")
    run_id = run["run_id"]
    kafka_runs.append(run_id)

    def topics() -> list[str]:
        from phoenix95.tap.plan import existing_topics

        return sorted(t for t in asyncio.run(existing_topics(services.kafka)) if t.startswith(f"{run_id}."))

    def groups() -> list[str]:
        return [g for g in asyncio.run(list_groups(services.kafka)) if g.startswith(f"{run_id}.")]

    def schema_exists() -> bool:
        async def query() -> bool:
            async with Database(services.postgres) as db:
                rows = await db.fetch("SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", (run_id,))
                return bool(rows)

        return asyncio.run(query())

    assert set(Topics(run_id).all()) <= set(topics())
    if get_settings().kafka.consumer_loop == "faust":
        assert any("__assignor" in topic for topic in topics())  # Faust's own topics for the run's apps
    assert sorted(groups()) == sorted(Topics(run_id).group(s) for s in ("analysis", "risk", "execution", "positions"))
    assert schema_exists() and asyncio.run(table_counts(services.postgres, run_id))["orders"] == run["orders"]
    assert redis_values(services.redis, f"{run_id}:")

    result = CliRunner().invoke(app, ["replay", "clean", run_id])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report["groups"].values()) == {"deleted"}, report["groups"]

    assert topics() == []
    assert groups() == []
    assert not schema_exists()
    assert redis_values(services.redis, f"{run_id}:") == {}


def test_a_max_drawdown_what_if_changes_where_the_sample_halts():
    base = replay()
    looser = replay("--set", "compliance.max_drawdown_pct=50")
    drawdowns = [[t["at"] for t in run["protections"] if t["reason"] == "MAX_DRAWDOWN"] for run in (base, looser)]
    assert drawdowns[0] and drawdowns[1] and drawdowns[1][0] > drawdowns[0][0]
    assert looser["digest"] != base["digest"] and looser["orders"] > base["orders"]
    assert looser["rejected_by_reason"]["TRADING_HALTED"] < base["rejected_by_reason"]["TRADING_HALTED"]


def test_a_what_if_run_changes_the_results(namespace):
    base = replay()
    lower = replay("--set", "risk.leverage=10", "--set", "risk.kelly_fraction=0.1")
    assert lower["digest"] != base["digest"]
    assert lower["settings"] == {"P95_RISK__LEVERAGE": "10", "P95_RISK__KELLY_FRACTION": "0.1"}
    assert lower["pnl"] != base["pnl"]


def test_the_quick_kafka_replay_benchmark_replays_a_smaller_share_of_the_sample(namespace):
    from phoenix95.bench import replay as bench_replay

    quick = bench_replay.kafka(Settings(), quick=True)
    assert quick["same_digest_as_inprocess"] is True
    assert quick["signals"] == bench_replay.QUICK_SIGNALS
    assert quick["events"] < (300 + 1999) / 2
    assert quick["value"] > 0


def test_replay_writes_a_self_contained_html_report(tmp_path):
    path = tmp_path / "report.html"
    summary = replay("--report", str(path))
    text = path.read_text()
    assert summary["report"] == str(path)
    assert "<svg id='equity-curve'" in text and "<polyline" in text
    assert "http://" not in text and "https://" not in text and "<script" not in text
    assert f"<h2>Protections tripped ({len(summary['protections'])})</h2>" in text
    assert "<td>MAX_DRAWDOWN</td>" in text and "drawdown 27.19% from the equity peak" in text


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium is not installed (`make test` installs Debian's chromium when run as root); "
    "manual check: chromium --headless --no-sandbox --screenshot=report.png --window-size=1200,1400 file://$PWD/report.html",
)
def test_the_report_renders_its_equity_curve_in_headless_chromium(tmp_path):
    from tests.png import pixels

    report = tmp_path / "report.html"
    replay("--report", str(report))
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            "--window-size=1200,1400",
            report.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    width, height, image = pixels(shot)
    assert (width, height) == (1200, 1400)
    # the equity curve is drawn in #1f77b4: count the pixels of that blue (anti-aliasing shades the rest)
    blue = sum(1 for r, g, b in image if abs(r - 0x1F) < 24 and abs(g - 0x77) < 24 and abs(b - 0xB4) < 24)
    assert blue > 400, f"only {blue} pixels of the equity curve's colour in the screenshot"
