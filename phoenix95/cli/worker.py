"""`p95 worker`: run one stage in this process (a Faust worker), or several as supervised processes.

With several stages, `--web-port N` gives the first stage port N and each next one the next port
(`--stage analysis --stage risk --web-port 6066`: analysis on 6066, risk on 6067); the mapping is
printed at start.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from phoenix95.settings import get_settings
from phoenix95.streams.stages import BY_NAME, default_stages
from phoenix95.streams.supervisor import SUPERVISED_ENV

if TYPE_CHECKING:
    from phoenix95.streams.metrics import SignalTimes

logger = logging.getLogger(__name__)


def stage_web_ports(stages: Sequence[str], first_port: int) -> dict[str, int]:
    """One /metrics port per stage: `first_port` for the first, then consecutive ports, in order."""
    return {stage: first_port + index for index, stage in enumerate(stages)}


#: What `p95 worker --stage` runs: the registered stages, and the simulated market-data feed.
WORKER_STAGES: tuple[str, ...] = (*BY_NAME, "feed")


def run_worker(
    stages: Sequence[str],
    *,
    web_port: int | None,
    log_level: str,
    web: bool = True,
    feed: bool = False,
    check: bool = False,
) -> None:
    """Run the stages (default: the four pipeline stages; `feed` adds the simulated feed). Each
    serves /health and /metrics on its port from the settings (P95_PORTS__<STAGE>), or from
    `web_port` on (consecutive), unless `web` is off."""
    from phoenix95.cli.console import UserError
    from phoenix95.cli.ports import check_port_free

    unknown = [s for s in stages if s not in WORKER_STAGES]
    if unknown:
        raise UserError(f"unknown stage(s) {', '.join(unknown)}; expected {', '.join(WORKER_STAGES)}")
    settings = get_settings()
    settings.check_production()
    chosen = list(dict.fromkeys(stages)) or list(default_stages(settings))
    if "notifications" in chosen:
        check_notify_config(settings)
    if feed and "feed" not in chosen:
        chosen.append("feed")
    if not web:
        ports: dict[str, int] = {}
    elif web_port is not None:
        ports = stage_web_ports(chosen, web_port) if web_port else dict.fromkeys(chosen, 0)
    else:
        ports = {stage: settings.port_of(stage) for stage in chosen}
    if ports and max(ports.values()) > 65535:
        raise UserError(f"--web-port {web_port}: {len(chosen)} stages need ports up to {max(ports.values())}")
    for stage, port in ports.items():
        check_port_free(
            settings.metrics.host, port, what=f"the {stage} stage", setting=f"P95_PORTS__{stage.upper()} or --web-port"
        )
    if os.environ.get(SUPERVISED_ENV) != "1":  # what `p95 worker` supervises retries instead
        from phoenix95.stack.ready import preflight

        preflight(settings, ("broker",) if chosen == ["feed"] else ("broker", "postgres", "redis"))
    from phoenix95.streams.wiring import prepare

    prepare(settings)
    if check:
        from rich.console import Console

        Console(stderr=True).print(
            f"ready to run {', '.join(chosen)}: the stores answer, the topics exist, the schema is migrated"
        )
        return
    if len(chosen) == 1:
        if chosen[0] == "feed":
            run_feed_stage(settings, web_port=ports.get("feed"))
        else:
            run_stage(chosen[0], web_port=ports.get(chosen[0]), log_level=log_level)
        return
    from phoenix95.streams.supervisor import WorkerSet

    workers = WorkerSet(chosen, log_dir=settings.home / "logs", web_ports=ports, log_level=log_level)
    logger.info("supervising %s", ", ".join(chosen))
    announce_ports(ports, settings.metrics.host)
    workers.supervise()


def run_feed_stage(settings: Any, *, web_port: int | None) -> None:
    """The simulated feed as a worker stage, with the feed settings (P95_FEED__*)."""
    from phoenix95.cli.market_feed import run_simulated_feed

    feed = settings.feed
    run_simulated_feed(
        settings,
        [symbol.upper() for symbol in feed.symbols],
        interval_s=feed.interval_s,
        volatility=feed.volatility,
        seed=feed.seed,
        starts={},
        port=web_port,
    )


def check_notify_config(settings: object) -> None:
    """A malformed Apprise URL or routing rule is refused at start, in one line naming the entry."""
    from phoenix95.cli.console import UserError
    from phoenix95.notify.channels import ConfigError, build_channels
    from phoenix95.settings import Settings

    assert isinstance(settings, Settings)
    try:
        build_channels(settings.notify)
    except ConfigError as error:
        raise UserError(str(error)) from None


def announce_ports(ports: Mapping[str, int], host: str) -> None:
    """Which port serves which stage's /metrics (on stderr, and in the log)."""
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    for stage, port in ports.items():
        logger.info("stage %s: metrics on port %d", stage, port)
        console.print(f"{stage}: http://{host}:{port}/health  /metrics")


def run_stage(stage: str, *, web_port: int | None, log_level: str) -> None:
    from phoenix95.monitoring.health import registered

    settings = get_settings()
    if web_port == 0:
        from phoenix95.cli.ports import free_port

        web_port = free_port(settings.metrics.host)
    # registered from the start: `p95 status` shows the stage while Faust starts ("no answer" until then)
    with registered(settings.home, stage, port=web_port, host=settings.metrics.host, kind="worker"):
        _run_faust_stage(settings, stage, web_port=web_port, log_level=log_level)


def _run_faust_stage(settings: Any, stage: str, *, web_port: int | None, log_level: str) -> None:
    import faust

    from phoenix95.monitoring.probe import SIGNAL_PATH_STAGES, PipelineLagProbe
    from phoenix95.streams.app import create_app
    from phoenix95.streams.metrics import PipelineMetrics

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
