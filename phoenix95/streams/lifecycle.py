"""Which position events also go to p95.positions.lifecycle: the ones the notification hub acts on.

The positions stage publishes every event of a position on p95.positions.ticks: each mark to market
and funding payment as well as the open and the close (about six per signal in `e2e_throughput`).
The hub notifies opens, closes and rises of the risk level, so it reads a topic that holds only
those: every open and close, and every event whose risk level differs from that of the event this
producer last published for the position (or that is the first one it publishes for it).
`EventProducer` keeps one filter and produces the copies in the same acknowledged send as the ticks:
before the input's offset is committed, and again whenever a stage's outbox is drained.

Why the hub notifies exactly what it notified when it read every tick: its risk hysteresis
(`notify.events.escalation`) is idempotent on a repeated level (an event at the level of the one
before it changes neither what is notified nor what is remembered), so leaving out the events that
repeat the previous level leaves out nothing it would notify. A copy too many (the filter starts
empty after a restart, and forgets after a rebalance: a position that moved to another instance may
have changed level there) is one more repeat, and has the event id of its tick, which the hub's
outbox rows are keyed by. Pure logic, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

from phoenix95.schemas.messages import PositionEvent

#: Kinds that go to the lifecycle topic whatever the risk level (ticks and funding go on a change).
LIFECYCLE_KINDS = frozenset({"opened", "closed", "liquidated", "expired"})
#: Kinds after which the position is gone (its level is forgotten).
CLOSING_KINDS = frozenset({"closed", "liquidated", "expired"})


class LifecycleFilter:
    """The risk level of the last event published per open position, and what that selects."""

    def __init__(self) -> None:
        self.levels: dict[str, str] = {}

    def select(self, events: Iterable[object]) -> tuple[list[PositionEvent], dict[str, str | None]]:
        """The lifecycle events among `events` (in their order), and the levels to `remember` once
        they were produced (None: the position closed). Remembers nothing itself: a send that fails
        leaves the filter as it was, so the events produced again (from the outbox) are chosen again."""
        chosen: list[PositionEvent] = []
        changes: dict[str, str | None] = {}
        for event in events:
            if type(event) is not PositionEvent:
                continue
            position_id = event.position_id
            last = changes[position_id] if position_id in changes else self.levels.get(position_id)
            if event.kind in LIFECYCLE_KINDS or last is None or event.risk_level != last:
                chosen.append(event)
            changes[position_id] = None if event.kind in CLOSING_KINDS else event.risk_level
        return chosen, changes

    def remember(self, changes: dict[str, str | None]) -> None:
        """The events `select` returned `changes` for were produced."""
        for position_id, level in changes.items():
            if level is None:
                self.levels.pop(position_id, None)
            else:
                self.levels[position_id] = level

    def forget(self) -> None:
        """Know no position any more: the next event of each goes to the lifecycle topic."""
        self.levels.clear()
