"""p95.positions.lifecycle: which position events the producer copies there (opens, closes, risk-level
changes), and that the notification hub reading only those writes exactly the rows it writes reading
every tick, also when the filter forgets (a restart, a rebalance) and copies more than it needs to."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix95.agents.ports import InputRecord
from phoenix95.notify.channels import Router, build_channels
from phoenix95.notify.stage import NotificationStage, NotifyOutcome
from phoenix95.schemas import topics
from phoenix95.schemas.codec import Codec
from phoenix95.settings import NotifySettings
from phoenix95.streams import stages
from phoenix95.streams.lifecycle import LifecycleFilter
from tests import factories
from tests.unit.samples import samples

T0 = datetime(2026, 1, 1, tzinfo=UTC)
A = "5f0c7a4e-1d2b-5c3d-9e8f-0a1b2c3d4e5f"
B = "7a1d2b3c-4e5f-4a6b-8c9d-0e1f2a3b4c5d"
SETTINGS = NotifySettings.model_validate({"urls": [{"url": "json://127.0.0.1:9/a", "name": "a"}]})


def _event(kind: str, level: str = "LOW", *, position_id: str = A, minute: int = 0) -> Any:
    return factories.position_event(kind, position_id=position_id, risk_level=level, at=T0 + timedelta(minutes=minute))


def _chosen(lifecycle: LifecycleFilter, events: list[Any]) -> list[tuple[str, str]]:
    chosen, changes = lifecycle.select(events)
    lifecycle.remember(changes)
    return [(e.kind, e.risk_level) for e in chosen]


def test_opens_closes_and_risk_level_changes_are_copied_and_repeated_levels_are_not() -> None:
    levels = ["LOW", "LOW", "MEDIUM", "MEDIUM", "HIGH", "HIGH", "CRITICAL", "LOW"]
    events = [
        _event("opened", "LOW"),
        *(_event("tick", level, minute=i + 1) for i, level in enumerate(levels)),
        _event("funding", "LOW", minute=20),
        _event("funding", "MEDIUM", minute=21),
        _event("closed", "MEDIUM", minute=22),
    ]
    assert _chosen(LifecycleFilter(), events) == [
        ("opened", "LOW"),
        ("tick", "MEDIUM"),
        ("tick", "HIGH"),
        ("tick", "CRITICAL"),
        ("tick", "LOW"),
        ("funding", "MEDIUM"),
        ("closed", "MEDIUM"),
    ]


def test_positions_are_followed_apart_and_forgotten_once_closed() -> None:
    lifecycle = LifecycleFilter()
    assert _chosen(lifecycle, [_event("opened", "HIGH"), _event("opened", "LOW", position_id=B)]) == [
        ("opened", "HIGH"),
        ("opened", "LOW"),
    ]
    assert _chosen(lifecycle, [_event("tick", "HIGH", minute=1), _event("tick", "HIGH", position_id=B, minute=1)]) == [
        ("tick", "HIGH")  # B's level changed, A's did not
    ]
    assert _chosen(lifecycle, [_event("liquidated", "CRITICAL", minute=2)]) == [("liquidated", "CRITICAL")]
    assert lifecycle.levels == {B: "HIGH"}


def test_a_send_that_failed_remembers_nothing_so_the_same_events_are_copied_again() -> None:
    lifecycle = LifecycleFilter()
    _chosen(lifecycle, [_event("opened", "LOW")])
    batch = [_event("tick", "MEDIUM", minute=1), _event("tick", "MEDIUM", minute=2)]
    first, _ = lifecycle.select(batch)  # the send failed: nothing remembered
    again, changes = lifecycle.select(batch)  # produced again (the outbox)
    assert first == again and [e.risk_level for e in again] == ["MEDIUM"]
    lifecycle.remember(changes)
    assert lifecycle.select(batch)[0] == []


def test_after_forgetting_the_next_event_of_each_position_is_copied() -> None:
    lifecycle = LifecycleFilter()
    _chosen(lifecycle, [_event("opened", "LOW"), _event("tick", "LOW", minute=1)])
    lifecycle.forget()
    assert _chosen(lifecycle, [_event("tick", "LOW", minute=2), _event("tick", "LOW", minute=3)]) == [("tick", "LOW")]


def test_other_events_are_never_copied() -> None:
    signal, analysis, verdict, order, *_ = samples()
    assert LifecycleFilter().select([signal, analysis, verdict, order]) == ([], {})


def test_the_hub_reads_the_lifecycle_and_not_the_ticks_and_compliance_still_reads_the_ticks() -> None:
    assert topics.POSITION_LIFECYCLE in stages.NOTIFICATIONS.inputs
    assert topics.POSITION_TICKS not in stages.NOTIFICATIONS.inputs
    assert topics.POSITION_TICKS in stages.COMPLIANCE.inputs
    assert topics.Topics("r1").position_lifecycle == "r1.p95.positions.lifecycle"
    assert topics.Topics("r1").position_lifecycle in topics.Topics("r1").all()


# -- the hub writes the same rows from the lifecycle as from every tick ---------------------------------

_offsets = iter(range(10**9))


def _rows(base: str, events: list[Any]) -> list[tuple[Any, ...]]:
    """Every write (outbox rows and remembered state) of a fresh hub reading `events` from `base`."""
    stage = NotificationStage(Codec(), Router(SETTINGS, build_channels(SETTINGS)), _NoState(), dlq_window_s=30)  # type: ignore[arg-type]
    asyncio.run(stage.start())
    records = [InputRecord(base, 0, next(_offsets), None, None, Codec().encode(e)) for e in events]
    outcomes = asyncio.run(stage.process(records))
    return [(w.statement, w.params) for o in outcomes if isinstance(o, NotifyOutcome) for w in o.writes]


class _NoState:
    async def load_state(self) -> dict[str, str]:
        return {}


_LEVELS = st.sampled_from(["LOW", "MEDIUM", "HIGH", "CRITICAL"])
_STEP = st.tuples(st.sampled_from([A, B]), st.sampled_from(["tick", "tick", "tick", "funding"]), _LEVELS, st.booleans())


@settings(max_examples=60)
@given(opening=st.tuples(_LEVELS, _LEVELS), steps=st.lists(_STEP, max_size=40), closes=st.booleans())
def test_the_hub_writes_the_same_rows_from_the_lifecycle_as_from_every_tick(
    opening: tuple[str, str], steps: list[tuple[str, str, str, bool]], closes: bool
) -> None:
    ticks = [_event("opened", opening[0], minute=0), _event("opened", opening[1], position_id=B, minute=0)]
    forget_at = set()
    for minute, (position_id, kind, level, forget) in enumerate(steps, start=1):
        if forget:
            forget_at.add(len(ticks))  # a restart or rebalance of the positions worker before this event
        ticks.append(_event(kind, level, position_id=position_id, minute=minute))
    if closes:
        ticks.append(_event("closed", ticks[-1].risk_level, minute=len(steps) + 1))
    lifecycle, copies = LifecycleFilter(), []
    for index, event in enumerate(ticks):
        if index in forget_at:
            lifecycle.forget()
        copies.extend(_chosen_events(lifecycle, event))
    assert _rows(topics.POSITION_LIFECYCLE, copies) == _rows(topics.POSITION_TICKS, ticks)


def _chosen_events(lifecycle: LifecycleFilter, event: Any) -> list[Any]:
    chosen, changes = lifecycle.select([event])
    lifecycle.remember(changes)
    return chosen
