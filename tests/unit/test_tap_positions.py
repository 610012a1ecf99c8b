"""Start positions: --from and --until parsing, offsets clamped to the partition, and the
offset-for-time lookup that checks the broker's answer and searches when it is wrong."""

from __future__ import annotations

import asyncio
import bisect
from datetime import UTC, datetime

import pytest

from phoenix95.tap.positions import (
    Bounds,
    PositionError,
    StartSpec,
    format_ms,
    offset_for_time,
    parse_start,
    parse_time,
    start_offset,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
NOW_MS = 1795521600000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("beginning", StartSpec("beginning")),
        ("earliest", StartSpec("beginning")),
        ("end", StartSpec("end")),
        ("latest", StartSpec("end")),
        ("0", StartSpec("offset", 0)),
        ("1234", StartSpec("offset", 1234)),
        ("-100", StartSpec("from_end", 100)),
        ("1795535710752", StartSpec("time", 1795535710752)),
        ("@1234", StartSpec("time", 1234)),
        ("2026-11-24T10:00:00Z", StartSpec("time", NOW_MS - 2 * 3600 * 1000)),
        ("2026-11-24T10:00:00+00:00", StartSpec("time", NOW_MS - 2 * 3600 * 1000)),
        ("2026-11-24T11:00:00+01:00", StartSpec("time", NOW_MS - 2 * 3600 * 1000)),
        ("2026-11-24T10:00:00", StartSpec("time", NOW_MS - 2 * 3600 * 1000)),
        ("2026-11-24", StartSpec("time", NOW_MS - 12 * 3600 * 1000)),
        ("15m", StartSpec("time", NOW_MS - 15 * 60 * 1000)),
        ("2h", StartSpec("time", NOW_MS - 2 * 3600 * 1000)),
        ("1d", StartSpec("time", NOW_MS - 86400 * 1000)),
        ("90s", StartSpec("time", NOW_MS - 90 * 1000)),
    ],
)
def test_start_is_read_from_every_documented_form(text, expected):
    assert parse_start(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "-", "12:00", "1.5", "-5m", "beginning+1"])
def test_unreadable_start_is_an_error_naming_the_forms(text):
    with pytest.raises(PositionError) as caught:
        parse_start(text, now=NOW)
    assert "beginning, end, an offset" in str(caught.value)


def test_until_reads_times_and_rejects_the_rest():
    assert parse_time("2026-11-24T12:00:00Z") == NOW_MS
    assert parse_time("1795521600000") == NOW_MS
    assert parse_time("5m", now=NOW) == NOW_MS - 300_000
    with pytest.raises(PositionError):
        parse_time("soon")
    assert format_ms(NOW_MS) == "2026-11-24T12:00:00.000Z"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (StartSpec("beginning"), 10),
        (StartSpec("end"), 50),
        (StartSpec("offset", 20), 20),
        (StartSpec("offset", 5), 10),  # before the first record: the first record
        (StartSpec("offset", 70), 50),  # past the end: the end
        (StartSpec("from_end", 5), 45),
        (StartSpec("from_end", 100), 10),
        (StartSpec("from_end", 0), 50),
    ],
)
def test_start_offset_is_clamped_to_the_partition(spec, expected):
    assert start_offset(spec, Bounds(10, 50)) == expected


def test_a_time_start_needs_the_lookup():
    assert start_offset(StartSpec("time", NOW_MS), Bounds(0, 5)) is None


class FakeLog:
    """A partition: record timestamps by offset; a fetch returns up to `batch` records from an offset."""

    def __init__(self, timestamps: list[int], *, beginning: int = 0, batch: int = 3, gaps: set[int] = frozenset()):
        self.records = [(beginning + i, ts) for i, ts in enumerate(timestamps) if beginning + i not in gaps]
        self.bounds = Bounds(beginning, beginning + len(timestamps))
        self.batch = batch
        self.fetches = 0

    async def fetch(self, offset: int) -> list[tuple[int, int]]:
        self.fetches += 1
        index = bisect.bisect_left([o for o, _ in self.records], offset)
        return self.records[index : index + self.batch]

    def expected(self, timestamp: int) -> int:
        return next((o for o, ts in self.records if ts >= timestamp), self.bounds.end)


def lookup(log: FakeLog, timestamp: int, broker_answer: int | None = None) -> int:
    offset, _fetches = asyncio.run(offset_for_time(timestamp, log.bounds, log.fetch, broker_answer=broker_answer))
    return offset


TIMESTAMPS = [1000, 1000, 1000, 2000, 2000, 3000, 5000, 5000, 5000, 5000, 8000, 9000, 9500]


@pytest.mark.parametrize("timestamp", [0, 999, 1000, 1001, 2000, 2500, 3000, 4999, 5000, 7000, 9500, 9501, 20000])
def test_offset_for_time_is_the_first_record_at_or_after_the_time(timestamp):
    log = FakeLog(TIMESTAMPS, beginning=100)
    assert lookup(log, timestamp) == log.expected(timestamp)


def test_a_wrong_broker_answer_is_caught_and_searched_past():
    log = FakeLog(TIMESTAMPS)
    # Tansu answers the first offset of the batch it appended at that time, or 0 after the last record
    assert lookup(log, 5000, broker_answer=0) == 6
    assert lookup(log, 20000, broker_answer=0) == len(TIMESTAMPS)
    assert lookup(log, 2500, broker_answer=9) == 5


def test_a_right_broker_answer_costs_one_fetch():
    log = FakeLog(TIMESTAMPS)
    offset, fetches = asyncio.run(offset_for_time(5000, log.bounds, log.fetch, broker_answer=6))
    assert (offset, fetches) == (6, 1)
    offset, fetches = asyncio.run(offset_for_time(20000, log.bounds, log.fetch, broker_answer=len(TIMESTAMPS)))
    assert (offset, fetches) == (len(TIMESTAMPS), 1)


def test_offset_for_time_on_a_large_partition_takes_a_logarithmic_number_of_fetches():
    timestamps = [1_000_000 + i * 7 for i in range(100_000)]
    log = FakeLog(timestamps, batch=50)
    target = timestamps[61_234] - 3
    assert lookup(log, target) == 61_234
    assert log.fetches <= 20


def first_record_from(log: FakeLog, offset: int) -> int:
    return next((o for o, _ in log.records if o >= offset), log.bounds.end)


@pytest.mark.parametrize("timestamp", [2500, 3000, 5000])
def test_offset_for_time_steps_over_missing_offsets(timestamp):
    log = FakeLog(TIMESTAMPS, gaps={5, 6, 7})  # offsets 5-7 hold nothing
    answer = lookup(log, timestamp)
    assert first_record_from(log, answer) == 8  # reading from the answer, the first record is 8
    assert all(ts < timestamp for o, ts in log.records if o < answer)


def test_offset_for_time_on_an_empty_partition_is_its_end():
    assert lookup(FakeLog([], beginning=40), 1000) == 40
