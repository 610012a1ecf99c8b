"""The stage sink: PostgreSQL first (the system of record), then Redis hot state and time-series
points side by side. Implements the `Sink` port the agents write through."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from phoenix95.agents.ports import DeadLettered, Fact, Outcome, PositionChanged
from phoenix95.storage.audit_facts import audit_writes_for
from phoenix95.storage.postgres import Database, PgWrite
from phoenix95.storage.redis_state import RedisState
from phoenix95.storage.tables import writes_for
from phoenix95.storage.timeseries import TimeseriesSink

logger = logging.getLogger(__name__)


class StoreSink:
    def __init__(
        self,
        database: Database,
        redis: RedisState | None,
        timeseries: TimeseriesSink | None,
        *,
        audit: bool = True,
    ):
        self.database = database
        self.redis = redis
        self.timeseries = timeseries
        #: Add the audit entries of verdicts, orders, fills and closes to each batch (storage/audit_facts.py).
        self.audit = audit

    async def persist(self, stage: str, outcomes: Sequence[Outcome]) -> list[tuple[int, Exception]]:
        groups: list[list[PgWrite]] = []
        for outcome in outcomes:
            if not outcome.persist and outcome.dead_letter is None:
                groups.append([])  # most inputs of a price-reading stage: nothing to write
                continue
            facts: list[Fact] = list(outcome.persist)
            if outcome.dead_letter is not None:
                facts.append(DeadLettered(outcome.dead_letter))
            group = [write for fact in facts for write in writes_for(fact)]
            if self.audit:
                group.extend(write for fact in outcome.persist for write in audit_writes_for(stage, fact))
            groups.append(group)
        failures = await self.database.write(groups)
        failed = {index for index, _ in failures}
        hot: list[Fact] = [fact for i, o in enumerate(outcomes) if i not in failed for fact in o.persist]
        if not hot:
            return failures
        # Redis and the time-series store are independent of each other: write them side by side.
        writes = []
        if self.redis is not None:
            writes.append(self.redis.apply(_latest_position_states(hot)))
        if self.timeseries is not None:
            writes.append(self.timeseries.write_facts(hot))
        results = await asyncio.gather(*writes, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return failures


def _latest_position_states(facts: list[Fact]) -> list[Fact]:
    """Redis holds a position's latest state only: of several states of one position in a batch,
    write the last (facts are in processing order)."""
    last: dict[str, int] = {}
    for index, fact in enumerate(facts):
        if isinstance(fact, PositionChanged):
            last[fact.position.position_id] = index
    return [
        fact
        for index, fact in enumerate(facts)
        if not isinstance(fact, PositionChanged) or last[fact.position.position_id] == index
    ]
