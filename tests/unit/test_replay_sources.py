"""Replay sources that need no services: CSV and JSON-lines signal files, the simulated price feed,
and the rules for reading a topic's time range."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from phoenix95.cli.main import app
from phoenix95.replay import runner, sources
from phoenix95.replay.summary import time_in_market

SAMPLE_LINES = 60
COLUMNS = (
    "signal_id",
    "time",
    "ticker",
    "action",
    "close",
    "confidence",
    "strategy",
    "interval",
    "macd",
    "rsi",
    "volume",
)


def replay(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["replay", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def sample_lines(count: int = SAMPLE_LINES) -> list[dict[str, Any]]:
    lines = runner.sample_signals_path().read_text().splitlines()[:count]
    return [{**json.loads(line), "signal_id": f"sample-{index:03d}"} for index, line in enumerate(lines)]


def write_jsonl(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def write_csv(path: Path, lines: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=COLUMNS)
        writer.writeheader()
        for line in lines:
            writer.writerow({key: line.get(key, "") for key in COLUMNS})
    return path


def test_a_csv_signals_file_replays_like_the_same_signals_in_json_lines(tmp_path):
    lines = sample_lines()
    assert set(COLUMNS) == {key for line in lines for key in line}
    assert any("macd" in line for line in lines) and any("macd" not in line for line in lines)  # empty cells too
    from_jsonl = replay("--signals", str(write_jsonl(tmp_path / "signals.jsonl", lines)))
    from_csv = replay("--signals", str(write_csv(tmp_path / "signals.csv", lines)))
    assert from_csv["signals"] == SAMPLE_LINES
    assert from_csv["orders"] > 0
    assert from_csv["digest"] == from_jsonl["digest"]
    assert from_csv["sources"]["signals"] == {"kind": "file", "path": str(tmp_path / "signals.csv")}


def test_a_csv_line_that_is_not_a_signal_is_reported_by_its_line_number_and_the_rest_replayed(tmp_path):
    lines = sample_lines(10)
    lines[3] = {**lines[3], "action": "hold"}
    summary = replay("--signals", str(write_csv(tmp_path / "signals.csv", lines)))
    assert summary["signals"] == 9
    assert [bad["line"] for bad in summary["invalid_signal_lines"]] == [5]  # the header is line 1


def test_the_simulated_feed_prices_a_replay_over_the_span_of_its_signals_deterministically(tmp_path):
    signals = str(write_jsonl(tmp_path / "signals.jsonl", sample_lines()))
    simulated = replay("--signals", signals, "--simulate", "XRPUSDT:1.19:0.8")
    again = replay("--signals", signals, "--simulate", "XRPUSDT:1.19:0.8")
    on_candles = replay("--signals", signals)
    parsed, _bad = sources.read_signals_file(Path(signals))
    # five-minute prices from an hour before the first signal to an hour after the last
    expected = int(((parsed[-1].ts_event - parsed[0].ts_event) + timedelta(hours=2)) / timedelta(minutes=5))
    assert simulated["prices"] == expected
    assert simulated["sources"]["prices"] == [{"kind": "simulated", "spec": "XRPUSDT:1.19:0.8", "ticks": expected}]
    assert simulated["orders"] > 0
    assert simulated["digest"] == again["digest"]
    assert simulated["digest"] != on_candles["digest"]
    calmer = replay("--signals", signals, "--simulate", "XRPUSDT:1.19:0.2")
    assert calmer["digest"] != simulated["digest"]


def test_signals_of_a_symbol_without_prices_are_priced_by_a_simulation_from_their_first_price(tmp_path):
    lines = [
        {"signal_id": f"btc-{i}", "symbol": "BTCUSDT", "action": "buy", "price": "60000", "confidence": "0.95"}
        for i in range(3)
    ]
    for i, line in enumerate(lines):
        line["time"] = (datetime(2021, 11, 15, 6, tzinfo=UTC) + timedelta(hours=i)).isoformat()
    summary = replay("--signals", str(write_jsonl(tmp_path / "btc.jsonl", lines)))
    kinds = [(p["kind"], p.get("spec")) for p in summary["sources"]["prices"]]
    assert kinds == [("file", None), ("simulated", "BTCUSDT:60000")]
    assert summary["orders"] >= 1


def test_a_simulation_spec_must_name_a_symbol_and_a_start_price():
    start = datetime(2021, 11, 15, tzinfo=UTC)
    with pytest.raises(sources.SourceError, match="SYMBOL:START_PRICE"):
        sources.simulated_prices("XRPUSDT", start=start, end=start + timedelta(hours=1))
    ticks = sources.simulated_prices("xrpusdt:1.19", start=start, end=start + timedelta(hours=1))
    assert [t.symbol for t in ticks] == ["XRPUSDT"] * 12
    assert ticks == sources.simulated_prices("XRPUSDT:1.19", start=start, end=start + timedelta(hours=1))


def test_a_topic_read_stops_only_at_a_record_past_until_by_both_its_timestamp_and_its_event_time():
    until = datetime(2021, 11, 16, tzinfo=UTC)
    at_ms = int(until.timestamp() * 1000)
    assert not sources.past_until(at_ms + 1, until, None)
    assert sources.past_until(at_ms, until, until)
    # written late: the event is inside the range, the read goes on
    assert not sources.past_until(at_ms + 3_600_000, until - timedelta(seconds=1), until)
    # written before `until` (a clock ahead of the producer's): not yet past
    assert not sources.past_until(at_ms - 1, until + timedelta(hours=1), until)
    # historic events published today: past once the events are
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    assert sources.past_until(now_ms, until + timedelta(minutes=5), until)
    assert not sources.past_until(now_ms, until - timedelta(minutes=5), until)


def test_exposure_counts_time_with_overlapping_positions_open_once():
    t0 = datetime(2021, 11, 15, tzinfo=UTC)
    hour = timedelta(hours=1)
    assert time_in_market([]) == 0
    assert time_in_market([(t0, t0 + 2 * hour), (t0 + hour, t0 + 3 * hour), (t0 + 5 * hour, t0 + 6 * hour)]) == 4 * 3600
    assert time_in_market([(t0, t0 + 4 * hour), (t0 + hour, t0 + 2 * hour)]) == 4 * 3600
