"""`p95 worker`: run one stage in this process (a Faust worker), or several as supervised processes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from phoenix95.settings import get_settings
from phoenix95.streams.wiring import STAGES

logger = logging.getLogger(__name__)


def run_worker(stages: Sequence[str], *, web_port: int | None, log_level: str) -> None:
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        from phoenix95.cli.main import UserError

        raise UserError(f"unknown stage(s) {', '.join(unknown)}; expected {', '.join(STAGES)}")
    settings = get_settings()
    settings.check_production()
    chosen = list(stages) or list(STAGES)
    prepare(settings)
    if len(chosen) == 1:
        run_stage(chosen[0], web_port=web_port, log_level=log_level)
        return
    from phoenix95.streams.supervisor import WorkerSet

    workers = WorkerSet(chosen, log_dir=settings.home / "logs", log_level=log_level)
    logger.info("supervising %s", ", ".join(chosen))
    workers.supervise()


def prepare(settings: object) -> None:
    """Create the topics and apply migrations before any worker starts."""
    from phoenix95.settings import Settings
    from phoenix95.storage.postgres import migrate
    from phoenix95.streams.admin import ensure_topics
    from phoenix95.streams.topics import Topics

    assert isinstance(settings, Settings)

    async def run() -> None:
        await ensure_topics(
            settings.kafka.bootstrap_servers,
            Topics(settings.namespace).all(),
            partitions=settings.kafka.partitions,
            replication_factor=settings.kafka.replication_factor,
        )
        await migrate(settings.postgres_url(), settings.postgres.db_schema, wait=True)

    asyncio.run(run())


def run_stage(stage: str, *, web_port: int | None, log_level: str) -> None:
    import faust

    from phoenix95.monitoring.probe import SIGNAL_PATH_STAGES, PipelineLagProbe
    from phoenix95.streams.app import create_app
    from phoenix95.streams.metrics import PipelineMetrics

    settings = get_settings()
    metrics = PipelineMetrics(stage, clock=settings.risk.clock) if web_port is not None else None
    lag = None
    if stage == "risk" and settings.risk.clock == "wall":
        # lag of the signal path (analysis + risk): over the limit, new signals are rejected as stale
        lag = PipelineLagProbe.from_settings(settings, SIGNAL_PATH_STAGES)
    elif metrics is not None:
        lag = PipelineLagProbe.from_settings(settings, (stage,))  # this stage's own lag, for /metrics
    if metrics is not None and lag is not None:
        metrics.attach_lag(lag.monitor)
    app = create_app(settings, stage, web_port=web_port, metrics=metrics, lag=lag)
    worker = faust.Worker(app, loglevel=log_level.upper(), quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
