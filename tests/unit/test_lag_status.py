"""Burrow-style partition and group status over a sliding window of lag samples."""

from __future__ import annotations

import pytest

from phoenix95.monitoring.status import (
    PartitionWindow,
    Sample,
    Status,
    StatusRules,
    group_status,
    worst,
)

RULES = StatusRules(window_s=10.0, min_samples=3)


def window_of(*points: tuple[float, int, int], rules: StatusRules = RULES) -> PartitionWindow:
    """A window fed with (time, committed position, end offset) samples."""
    window = PartitionWindow(rules)
    for at, position, end in points:
        window.add(Sample(at, position, end))
    return window


def statuses_over(points: list[tuple[float, int, int]], rules: StatusRules = RULES) -> list[Status]:
    window = PartitionWindow(rules)
    seen = []
    for at, position, end in points:
        window.add(Sample(at, position, end))
        seen.append(window.status())
    return seen


def test_caught_up_partition_is_ok_even_when_its_offset_never_moves():
    window = window_of(*[(float(t), 42, 42) for t in range(30)])
    assert window.status() == Status.OK


def test_first_sample_with_lag_is_ok_for_lack_of_history():
    assert window_of((0.0, 10, 50)).status() == Status.OK


def test_lag_growing_while_commits_still_move_is_warn():
    # The consumer commits, but the producer is faster: lag 5, 8, 11.
    window = window_of((0.0, 0, 5), (1.0, 2, 10), (2.0, 4, 15))
    assert window.status() == Status.WARN


def test_lag_that_just_appeared_is_not_yet_warn():
    window = window_of((0.0, 10, 10), (1.0, 12, 14), (2.0, 14, 20))
    assert window.status() == Status.OK


def test_lag_growing_over_fewer_than_min_samples_is_not_yet_warn():
    assert window_of((0.0, 0, 5), (1.0, 2, 10)).status() == Status.OK


def test_lag_that_shrinks_in_the_window_is_ok():
    # Catching up after a burst: lag 40, 30, 20.
    window = window_of((0.0, 10, 50), (1.0, 20, 50), (2.0, 30, 50))
    assert window.status() == Status.OK


def test_constant_lag_with_moving_offsets_is_ok():
    # Keeping pace a few messages behind (records held for the next price, commit interval).
    window = window_of((0.0, 10, 13), (1.0, 20, 23), (2.0, 30, 33), (3.0, 40, 43))
    assert window.status() == Status.OK


def test_lag_that_dips_once_is_not_warn():
    window = window_of((0.0, 0, 5), (1.0, 6, 9), (2.0, 8, 14))
    assert window.status() == Status.OK


def test_offsets_not_moving_for_half_the_window_with_lag_is_stall():
    window = window_of((0.0, 7, 9), (2.0, 7, 9), (5.0, 7, 9))
    assert window.status() == Status.STALL


def test_offsets_not_moving_for_less_than_half_the_window_is_not_stall():
    window = window_of((0.0, 7, 9), (2.0, 7, 9), (4.9, 7, 9))
    assert window.status() == Status.OK


def test_offset_that_did_not_move_because_there_was_nothing_to_read_is_not_stuck():
    # Caught up at offset 2 for a long time; three messages arrive just before the last sample.
    window = window_of((0.0, 2, 2), (6.0, 2, 2), (11.0, 2, 2), (12.0, 2, 5))
    assert window.status() == Status.OK


def test_stuck_clock_starts_when_the_consumer_was_last_caught_up():
    window = window_of((0.0, 2, 2), (6.0, 2, 2), (7.0, 2, 5), (12.0, 2, 9))
    assert window.status() == Status.STALL  # 6 s with work and no progress, not 12
    window.add(Sample(16.5, 2, 12))
    assert window.status() == Status.STOP


def test_no_commit_for_longer_than_the_window_is_stop():
    window = window_of((0.0, 7, 9), (5.0, 7, 9), (10.5, 7, 9))
    assert window.status() == Status.STOP


def test_stop_is_judged_against_the_time_asked_for():
    window = window_of((0.0, 3, 8), (1.0, 5, 8))
    assert window.status(now=1.0) == Status.OK
    assert window.status(now=11.5) == Status.STOP


def test_consumer_paused_while_messages_arrive_turns_warn_then_stall_then_stop():
    points = [(0.0, 0, 0), (1.0, 10, 10), (2.0, 20, 20)]  # consuming, caught up
    points += [(3.0 + t, 20, 30 + 10 * t) for t in range(12)]  # paused at offset 20; 10 msg/s keep coming
    seen = statuses_over(points)
    assert seen[:3] == [Status.OK] * 3
    assert Status.WARN in seen
    first_warn, first_stall, first_stop = (seen.index(s) for s in (Status.WARN, Status.STALL, Status.STOP))
    assert first_warn < first_stall < first_stop
    assert points[first_stall][0] - 2.0 >= RULES.stall_after_s  # last move was at t=2
    assert points[first_stop][0] - 2.0 > RULES.window_s
    assert seen[-1] == Status.STOP


def test_committed_offset_going_back_is_rewind():
    window = window_of((0.0, 50, 60), (1.0, 55, 60), (2.0, 12, 60))
    assert window.status() == Status.REWIND


def test_rewind_is_forgotten_once_it_leaves_the_window():
    window = window_of((0.0, 50, 60), (1.0, 12, 60), (2.0, 20, 61), (8.0, 40, 70), (12.0, 50, 80), (13.0, 60, 82))
    assert window.status() == Status.OK


def test_rewound_group_that_caught_up_again_is_ok():
    window = window_of((0.0, 50, 60), (1.0, 12, 60), (2.0, 60, 60))
    assert window.status() == Status.OK


def test_resumed_consumer_leaves_stop():
    window = window_of((0.0, 7, 9), (11.0, 7, 20), (12.0, 15, 20))
    assert window.status() == Status.OK


def test_samples_must_come_in_time_order():
    window = window_of((5.0, 1, 2))
    with pytest.raises(ValueError):
        window.add(Sample(4.0, 1, 2))


def test_status_of_an_empty_window_is_an_error():
    with pytest.raises(ValueError):
        PartitionWindow(RULES).status()


def test_window_keeps_min_samples_even_when_they_are_older_than_the_window():
    window = window_of((0.0, 0, 5), (20.0, 2, 10), (40.0, 4, 15), rules=StatusRules(window_s=10.0, min_samples=3))
    assert len(window.samples) == 3


def test_committed_offset_beyond_the_end_counts_as_no_lag():
    assert Sample(0.0, 12, 10).lag == 0


@pytest.mark.parametrize(
    ("partitions", "expected"),
    [
        ([Status.OK, Status.OK], Status.OK),
        ([], Status.OK),
        ([Status.OK, Status.WARN], Status.WARN),
        ([Status.WARN, Status.STALL], Status.ERR),
        ([Status.OK, Status.STOP], Status.ERR),
        ([Status.REWIND], Status.ERR),
    ],
)
def test_group_status_follows_burrow(partitions, expected):
    assert group_status(partitions) == expected


def test_worst_partition_status_orders_by_severity():
    assert worst([Status.OK, Status.WARN, Status.STALL, Status.REWIND]) == Status.STALL
    assert worst([Status.STALL, Status.STOP]) == Status.STOP
    assert worst([]) == Status.OK


@pytest.mark.parametrize("kwargs", [{"window_s": 0}, {"window_s": 10, "min_samples": 1}])
def test_rules_refuse_a_window_that_cannot_judge(kwargs):
    with pytest.raises(ValueError):
        StatusRules(**kwargs)
