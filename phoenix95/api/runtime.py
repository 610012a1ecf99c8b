"""What the API and the dashboard processes hold open (a PostgreSQL pool, Redis, a lag monitor) and the
actions they share (switch the trading state, trace a signal, run a replay). They read the stores and
the broker's offsets, never the stages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from phoenix95.api import audit
from phoenix95.api.security import Principal
from phoenix95.domain.trading_state import TradingState
from phoenix95.settings import Settings
from phoenix95.storage import queries
from phoenix95.storage.postgres import Database
from phoenix95.storage.redis_state import RedisState

logger = logging.getLogger(__name__)

LAG_INTERVAL_S = 5.0


@dataclass
class Runtime:
    settings: Settings
    db: Database
    redis: RedisState
    lag: Any = None  # the latest LagSnapshot, or None before the first sample / without a broker
    lag_error: str | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @classmethod
    async def start(cls, settings: Settings, *, lag: bool = True) -> Runtime:
        db = Database(
            settings.postgres_url(),
            schema=settings.postgres.db_schema,
            min_size=1,
            max_size=settings.postgres.pool_max_size,
            connect_timeout=settings.postgres.connect_timeout_s,
            statement_timeout=10.0,
        )
        await db.open()
        redis = RedisState.from_url(
            settings.redis_url(), prefix=settings.redis.prefix, metrics_ttl=settings.redis.metrics_ttl_s
        )
        runtime = cls(settings, db, redis)
        if lag:
            runtime.tasks.append(asyncio.create_task(runtime._sample_lag(), name="p95-lag-monitor"))
        return runtime

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.redis.close()
        await self.db.close()

    async def _sample_lag(self) -> None:
        """Consumer lag per stage (monitoring/: the same monitor as `p95 lag`), every few seconds."""
        from phoenix95.monitoring.monitor import LagMonitor, pipeline_targets
        from phoenix95.monitoring.offsets import OffsetReader

        while True:
            try:
                async with OffsetReader(self.settings.kafka.bootstrap_servers) as reader:
                    monitor = LagMonitor(reader, pipeline_targets(self.settings.namespace))
                    while True:
                        started = time.monotonic()
                        self.lag = await monitor.sample()
                        self.lag_error = None
                        await asyncio.sleep(max(0.5, LAG_INTERVAL_S - (time.monotonic() - started)))
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the broker is down: say so on the page, try again
                self.lag_error = f"{type(error).__name__}: {error}"[:300]
                logger.warning("lag monitor: %s", self.lag_error)
                await asyncio.sleep(LAG_INTERVAL_S)

    def lag_rows(self) -> list[dict[str, Any]]:
        if self.lag is None:
            return []
        return [
            {
                "group": g.group,
                "stage": g.stage,
                "status": g.status.value,
                "worst": g.worst.value,
                "lag": g.lag,
                "lag_seconds": g.lag_seconds,
                "partitions": g.partitions,
            }
            for g in self.lag.groups
        ]

    # -- actions ---------------------------------------------------------------------------------------

    async def set_trading_state(
        self, state: TradingState, reason: str, principal: Principal, remote: str | None
    ) -> datetime:
        """The same path as `p95 halt`: the PostgreSQL row (with its audit entry, actor api:<key id> or
        user:<name>), then the Redis mirror; and the API audit entry with the client address."""
        import inspect

        facts = {"remote": remote, "via": principal.kind}
        switch: Any = queries.set_trading_state
        if "details" in inspect.signature(switch).parameters:
            # the compliance chain (#18): one entry with the address in its details
            updated_at = await switch(self.db, state, reason=reason, actor=principal.actor, details=facts)
        else:
            updated_at = await queries.set_trading_state(self.db, state, reason=reason, actor=principal.actor)
            await audit.record(
                self.db,
                actor=principal.actor,
                action="trading_state",
                subject=state.value,
                remote=remote,
                details={"reason": reason, "via": principal.kind},
            )
        await self.redis.set_trading_state(state.value, reason, updated_at)
        return updated_at

    async def trace(self, signal_id: str, received_at: datetime | None) -> dict[str, Any]:
        """The trace of one signal through every topic (the logic of `p95 tap --trace`)."""
        import json

        from phoenix95.tap import trace
        from phoenix95.tap.decode import Decoder
        from phoenix95.tap.positions import StartSpec

        start = (
            StartSpec("time", int(received_at.timestamp() * 1000) - trace.DOWNSTREAM_MARGIN_MS)
            if received_at is not None
            else StartSpec("beginning")
        )
        decoder = Decoder.for_registry(self.settings.kafka.schema_registry_url)
        report = await asyncio.wait_for(
            trace._trace(self.settings.kafka.bootstrap_servers, self.settings.namespace, signal_id, start, decoder),
            trace.SCAN_TIMEOUT_S,
        )
        data = json.loads(trace.render_trace_json(report))
        data["conclusion"] = trace.conclusion(report)
        for step in data["steps"]:
            for sighting in step["sightings"]:
                sighting.pop("value", None)
        for sighting in data["dead_letters"]:
            sighting.pop("value", None)
        return data

    async def start_replay(
        self,
        principal: Principal,
        remote: str | None,
        *,
        signals_file: str,
        prices: list[str],
        overrides: list[str],
        source_name: str,
    ) -> str:
        """Start an in-process replay in a thread; its report row says running, then done or failed."""
        import json

        from phoenix95.replay import runner

        parsed = runner.parse_overrides(overrides)  # ValueError: the caller answers 422
        report_id = str(uuid.uuid4())
        request = {"signals": source_name, "prices": prices, "set": overrides}
        await self.db.execute(
            "INSERT INTO replay_reports (report_id, actor, status, request) VALUES (%s, %s, 'running', %s::jsonb)",
            (report_id, principal.actor, json.dumps(request)),
        )
        await audit.record(
            self.db, actor=principal.actor, action="replay.start", subject=report_id, remote=remote, details=request
        )
        self.tasks.append(
            asyncio.create_task(self._replay(report_id, signals_file, prices, parsed), name=f"replay-{report_id}")
        )
        return report_id

    async def _replay(self, report_id: str, signals_file: str, prices: list[str], overrides: dict[str, str]) -> None:
        import json
        import tempfile
        from pathlib import Path

        from phoenix95.replay import runner

        try:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "report.html"
                request = runner.ReplayRequest(
                    signals_file=signals_file, prices_files=prices, overrides=overrides, report=path
                )
                summary = await asyncio.to_thread(runner.run, request, base=self.settings)
                html = path.read_text(encoding="utf-8")
            summary.pop("report", None)
            await self.db.execute(
                """UPDATE replay_reports SET status = 'done', finished_at = NOW(), summary = %s::jsonb, html = %s
                    WHERE report_id = %s""",
                (json.dumps(summary, default=runner.decimal_to_text), html, report_id),
            )
        except Exception as error:
            logger.warning("replay %s failed: %s", report_id, error)
            await self.db.execute(
                "UPDATE replay_reports SET status = 'failed', finished_at = NOW(), error = %s WHERE report_id = %s",
                (f"{type(error).__name__}: {error}"[:1000], report_id),
            )


def minute_now() -> tuple[int, int]:
    """(the current minute since the epoch, seconds until the next one)."""
    now = time.time()
    minute = int(now // 60)
    return minute, max(1, int(60 - now % 60) + 1)


def utcnow() -> datetime:
    return datetime.now(UTC)


HOUR = timedelta(hours=1)
