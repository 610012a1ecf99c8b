"""`p95 publish` against the real broker: exactly the valid lines are published, the others are named
by line number and never stop the rest."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from phoenix95.cli.main import app
from phoenix95.connectors.kafka_admin import end_offsets
from phoenix95.schemas.codec import Codec
from phoenix95.schemas.messages import Signal
from phoenix95.settings import get_settings

pytestmark = pytest.mark.integration

JSON_LINES = """\
{"symbol": "XRPUSDT", "action": "buy", "price": "1.19", "signal_id": "cli-1"}
{"symbol": "XRPUSDT", "action": "hold", "price": "1.19", "signal_id": "cli-bad-action"}

{"ticker": "BINANCE:BTCUSDT.P", "action": "sell", "close": 65000.5, "signal_id": "cli-2"}
{"symbol": "XRPUSDT", "action": "buy", "price":
["not", "an", "object"]
{"symbol": "ETHUSDT", "action": "long", "price": "3000", "pirce": "1"}
{"symbol": "ETHUSDT", "action": "short", "price": "3001", "signal_id": "cli-3"}
"""

CSV = """\
symbol,action,price,confidence,signal_id
XRPUSDT,buy,1.19,0.9,csv-1
XRPUSDT,buy,-1,0.9,csv-bad-price
BINANCE:ETHUSDT.P,sell,3000.5,,csv-2
BTCUSDT,buy,65000,0.8,csv-3,extra
"""


def publish(*args: str, stdin: str | None = None):
    return CliRunner().invoke(app, ["publish", *args], input=stdin)


def topic_ids(topic: str) -> list[str]:
    async def read() -> list[str]:
        from aiokafka import AIOKafkaConsumer

        bootstrap = get_settings().kafka.bootstrap_servers
        ends = {tp: end for tp, end in (await end_offsets(bootstrap, [topic])).items() if end}
        if not ends:
            return []
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign(list(ends))
            await consumer.seek_to_beginning(*ends)
            found: list[str] = []
            while len(found) < sum(ends.values()):
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    found.extend(Codec().decode(r.value, Signal).signal_id for r in records)
            return found
        finally:
            await consumer.stop()

    return sorted(asyncio.run(asyncio.wait_for(read(), 30)))


def test_a_file_with_valid_and_invalid_lines_publishes_exactly_the_valid_ones(namespace, tmp_path: Path):
    path = tmp_path / "signals.jsonl"
    path.write_text(JSON_LINES)
    result = publish(str(path), "--json")
    assert result.exit_code == 1, result.output  # some lines were rejected
    summary = json.loads(result.stdout)
    assert summary["published"] == 3 and summary["rejected"] == 4
    assert [r["line"] for r in summary["rejections"]] == [2, 5, 6, 7]
    reasons = {r["line"]: r["reason"] for r in summary["rejections"]}
    assert reasons[2].startswith("action:") and "invalid JSON" in reasons[5]
    assert "one JSON object" in reasons[6] and reasons[7] == "pirce: unknown field"
    for line in (2, 5, 6, 7):
        assert f"line {line}:" in result.stderr
    assert "3 published" in result.stderr
    assert topic_ids(f"{namespace.name}.p95.signals") == ["cli-1", "cli-2", "cli-3"]


def test_csv_from_stdin_is_published_and_bad_rows_are_named(namespace):
    result = publish("-", "--json", stdin=CSV)
    summary = json.loads(result.stdout)
    assert (summary["published"], summary["rejected"]) == (2, 2)
    assert [r["line"] for r in summary["rejections"]] == [3, 5]
    assert "more values than the 5 header columns" in summary["rejections"][1]["reason"]
    assert topic_ids(f"{namespace.name}.p95.signals") == ["csv-1", "csv-2"]


def test_a_line_without_id_gets_the_same_id_each_time_it_is_published(namespace, tmp_path: Path):
    path = tmp_path / "one.jsonl"
    path.write_text('{"symbol": "XRPUSDT", "action": "buy", "price": "1.19"}\n')
    assert publish(str(path)).exit_code == 0
    assert publish(str(path)).exit_code == 0
    ids = topic_ids(f"{namespace.name}.p95.signals")
    assert len(ids) == 2 and ids[0] == ids[1]


def test_dry_run_validates_and_publishes_nothing(namespace, tmp_path: Path):
    path = tmp_path / "signals.jsonl"
    path.write_text(JSON_LINES)
    summary = json.loads(publish(str(path), "--dry-run", "--json").stdout)
    assert (summary["valid"], summary["rejected"], summary["dry_run"]) == (3, 4, True)
    assert topic_ids(f"{namespace.name}.p95.signals") == []


def test_rate_paces_the_publishing(namespace, tmp_path: Path):
    path = tmp_path / "paced.jsonl"
    path.write_text("".join(f'{{"symbol": "XRPUSDT", "action": "buy", "price": "1.{i:02d}"}}\n' for i in range(10)))
    result = publish(str(path), "--rate", "20/s", "--json")
    summary = json.loads(result.stdout)
    assert result.exit_code == 0 and summary["published"] == 10
    assert summary["seconds"] >= 9 / 20  # the 10th signal is due 0.45 s after the first
    assert len(topic_ids(f"{namespace.name}.p95.signals")) == 10


@pytest.mark.timeout(60)  # a hang fails the test
def test_an_unreachable_broker_is_a_clear_error(namespace, tmp_path: Path, monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("P95_KAFKA__BOOTSTRAP_SERVERS", closed)
    get_settings.cache_clear()
    path = tmp_path / "signals.jsonl"
    path.write_text(JSON_LINES)
    result = publish(str(path), "--timeout", "3")
    assert result.exit_code == 1
    assert f"cannot reach the broker at {closed}" in " ".join(result.stderr.split())
    assert "Traceback" not in result.output


def test_usage_errors_are_reported_without_a_traceback(namespace, tmp_path: Path):
    missing = publish(str(tmp_path / "nope.jsonl"))
    bad_rate = publish("-", "--rate", "fast", stdin="")
    assert missing.exit_code == 2 and "no such file" in missing.stderr
    assert bad_rate.exit_code == 2 and "--rate 'fast'" in bad_rate.stderr
