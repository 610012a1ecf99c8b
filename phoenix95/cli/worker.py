"""`p95 worker`: run one stage in this process (a Faust worker), or several as supervised processes.

With several stages, `--web-port N` gives the first stage port N and each next one the next port
(`--stage analysis --stage risk --web-port 6066`: analysis on 6066, risk on 6067); the mapping is
printed at start.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from phoenix95.settings import get_settings
from phoenix95.streams.stages import STAGES

if TYPE_CHECKING:
    from phoenix95.streams.metrics import SignalTimes

logger = logging.getLogger(__name__)


def stage_web_ports(stages: Sequence[str], first_port: int) -> dict[str, int]:
    """One /metrics port per stage: `first_port` for the first, then consecutive ports, in order."""
    return {stage: first_port + index for index, stage in enumerate(stages)}


def run_worker(stages: Sequence[str], *, web_port: int | None, log_level: str) -> None:
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        from phoenix95.cli.console import UserError

        raise UserError(f"unknown stage(s) {', '.join(unknown)}; expected {', '.join(STAGES)}")
    settings = get_settings()
    settings.check_production()
    chosen = list(dict.fromkeys(stages)) or list(STAGES)
    ports = stage_web_ports(chosen, web_port) if web_port is not None else {}
    if ports and max(ports.values()) > 65535:
        from phoenix95.cli.console import UserError

        raise UserError(f"--web-port {web_port}: {len(chosen)} stages need ports up to {max(ports.values())}")
    from phoenix95.streams.wiring import prepare

    prepare(settings)
    if len(chosen) == 1:
        run_stage(chosen[0], web_port=web_port, log_level=log_level)
        return
    from phoenix95.streams.supervisor import WorkerSet

    workers = WorkerSet(chosen, log_dir=settings.home / "logs", web_ports=ports, log_level=log_level)
    logger.info("supervising %s", ", ".join(chosen))
    announce_ports(ports, settings.metrics.host)
    workers.supervise()


def announce_ports(ports: Mapping[str, int], host: str) -> None:
    """Which port serves which stage's /metrics (on stderr, and in the log)."""
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    for stage, port in ports.items():
        logger.info("stage %s: metrics on port %d", stage, port)
        console.print(f"{stage}: http://{host}:{port}/metrics")


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
    if metrics is not None and stage == "positions" and settings.risk.clock == "wall":
        metrics.resolve_signal_times_with(signal_ingest_times(app.p95_runtime))  # type: ignore[attr-defined]
    worker = faust.Worker(app, loglevel=log_level.upper(), quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


def signal_ingest_times(runtime: Any) -> SignalTimes:
    """Looks signals' ingest times up in the `signals` rows, through the stage runtime's database
    (`received_at` is the signal's `ts_ingest`): for `p95_signal_to_position_seconds`."""
    from phoenix95.storage.readers import PgSeenSignals

    async def lookup(signal_ids: Sequence[str]) -> dict[str, datetime]:
        if runtime.database is None:  # the stage is (re)starting
            return {}
        found = await PgSeenSignals(runtime.database)(signal_ids)
        return {signal_id: at for signal_id, at in found.items() if isinstance(at, datetime)}

    return lookup
