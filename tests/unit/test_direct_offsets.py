"""The direct consume loop's offsets: what it commits is the last acked record + 1 per partition, only
past what is committed, only for partitions still assigned (streams/direct.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka import TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from phoenix95.agents.base import from_consumer_record
from phoenix95.streams.direct import Offsets, in_arrival_order

PRICES_0 = TopicPartition("p95.market.prices", 0)
PRICES_1 = TopicPartition("p95.market.prices", 1)


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    timestamp: int = 1_764_000_000_123
    key: bytes | None = b"BTCUSDT"
    value: bytes | None = b"v"
    headers: tuple[tuple[str, bytes], ...] = ()


def ack_all(offsets: Offsets, records: list[Record]) -> None:
    async def run() -> None:
        for record in records:
            await offsets.ack(record)

    asyncio.run(run())


def test_an_acked_record_makes_its_offset_plus_one_committable():
    offsets = Offsets()
    ack_all(offsets, [Record(PRICES_0.topic, 0, 0), Record(PRICES_0.topic, 0, 1), Record(PRICES_1.topic, 1, 7)])
    assert offsets.due({PRICES_0, PRICES_1}) == {PRICES_0: 2, PRICES_1: 8}


def test_nothing_is_due_again_once_committed_and_only_assigned_partitions_are_due():
    offsets = Offsets()
    ack_all(offsets, [Record(PRICES_0.topic, 0, 4), Record(PRICES_1.topic, 1, 2)])
    offsets.committed.update(offsets.due({PRICES_0}))
    assert offsets.due({PRICES_0}) == {}
    assert offsets.due({PRICES_0, PRICES_1}) == {PRICES_1: 3}
    assert offsets.due({PRICES_0, PRICES_1}, only={PRICES_0}) == {}


def test_a_record_acked_again_below_the_last_ack_does_not_move_the_offset_back():
    offsets = Offsets()
    ack_all(offsets, [Record(PRICES_0.topic, 0, 9), Record(PRICES_0.topic, 0, 3)])
    assert offsets.due({PRICES_0}) == {PRICES_0: 10}


def test_revoked_partitions_are_forgotten():
    offsets = Offsets()
    ack_all(offsets, [Record(PRICES_0.topic, 0, 4)])
    offsets.committed[PRICES_0] = 5
    offsets.forget({PRICES_0})
    assert offsets.acked == {} and offsets.committed == {}
    ack_all(offsets, [Record(PRICES_0.topic, 0, 2)])  # re-delivered after coming back
    assert offsets.due({PRICES_0}) == {PRICES_0: 3}


def test_an_aiokafka_record_becomes_an_input_record_with_its_millisecond_timestamp():
    record = from_consumer_record(Record("p95.signals", 2, 11, headers=(("trace", b"x"),), value=None))
    assert (record.topic, record.partition, record.offset, record.key, record.value) == (
        "p95.signals",
        2,
        11,
        b"BTCUSDT",
        b"",
    )
    assert record.timestamp is not None and record.timestamp.timestamp() == 1_764_000_000.123
    assert record.headers == (("trace", b"x"),)


partitions_of_records = st.lists(
    st.lists(st.integers(min_value=0, max_value=50), max_size=8),  # each record's timestamp, in offset order
    max_size=4,
)


@given(partitions_of_records)
def test_a_batch_of_several_partitions_keeps_each_partitions_offset_order(stamps):
    batches = [
        [Record("p95.topic", p, offset, timestamp=t) for offset, t in enumerate(ts)] for p, ts in enumerate(stamps)
    ]
    merged = in_arrival_order(batches)
    assert sorted((r.partition, r.offset) for r in merged) == [(r.partition, r.offset) for b in batches for r in b]
    for p in range(len(batches)):
        assert [r.offset for r in merged if r.partition == p] == list(range(len(batches[p])))


@given(partitions_of_records)
def test_partitions_each_in_time_order_come_out_in_time_order(stamps):
    batches = [
        [Record("p95.topic", p, offset, timestamp=t) for offset, t in enumerate(sorted(ts))]
        for p, ts in enumerate(stamps)
    ]
    merged = in_arrival_order(batches)
    assert [r.timestamp for r in merged] == sorted(r.timestamp for b in batches for r in b)


def test_a_price_taken_before_a_signal_is_handed_over_first_whichever_partition_was_fetched_first():
    signal = Record("p95.analysis", 0, 5, timestamp=2_000)
    price = Record("p95.market.prices", 0, 9, timestamp=1_000)
    assert in_arrival_order([[signal], [price]]) == [price, signal]
