"""`p95 worker`: run one stage in this process (a Faust worker), or several as supervised processes.

`--instances N` runs N processes of each chosen stage (`risk-1`, `risk-2`, ...) in the stage's one
consumer group: they share its partitions, and a rebalance hands a killed or stopped instance's
partitions to the others (docs/scaling.md). The same holds for `p95 worker --stage X` started on
several machines against the same brokers and PostgreSQL.

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


#: Worker stages that are not consumer stages of the registry, run only when named: `--stage feed`, the
#: market-data feed (P95_FEED__SOURCE): simulated prices (P95_FEED__*) on paper; with a live exchange,
#: Binance's mark-price and kline streams of `p95 feed binance` (P95_EXCHANGE__FEED_SYMBOLS or the
#: allowed symbols).
EXTRA_STAGES: tuple[str, ...] = ("feed",)
#: What `p95 worker --stage` runs.
WORKER_STAGES: tuple[str, ...] = (*BY_NAME, *EXTRA_STAGES)


def run_feed(settings: Any) -> None:
    import asyncio

    from phoenix95.cli.feed import run_feed as feed

    symbols = settings.exchange.feed_symbols or sorted(settings.risk.trading_config().allowed_symbols)
    asyncio.run(feed(settings, symbols, 0.0))


def stage_web_ports(stages: Sequence[str], first_port: int) -> dict[str, int]:
    """One /metrics port per stage: `first_port` for the first, then consecutive ports, in order."""
    return {stage: first_port + index for index, stage in enumerate(stages)}


def run_worker(
    stages: Sequence[str],
    *,
    web_port: int | None,
    log_level: str,
    instances: int = 1,
    web: bool = True,
    feed: bool = False,
    check: bool = False,
) -> None:
    """Run the stages (default: the four pipeline stages; `feed` adds the market-data feed). Each
    serves /health and /metrics on its port from the settings (P95_PORTS__<STAGE>), or from
    `web_port` on (consecutive), unless `web` is off; several instances of a stage get free ports."""
    from phoenix95.cli.console import UserError
    from phoenix95.cli.ports import check_port_free
    from phoenix95.streams.supervisor import instance_names, stage_of

    if instances < 1:
        raise UserError(f"--instances {instances}: give 1 or more")
    unknown = [s for s in stages if s not in WORKER_STAGES]
    if unknown:
        raise UserError(f"unknown stage(s) {', '.join(unknown)}; expected {', '.join(WORKER_STAGES)}")
    settings = get_settings()
    settings.check_production()
    if problems := settings.compliance.problems():
        raise UserError(problems[0])
    chosen = list(dict.fromkeys(stages)) or list(default_stages(settings))
    if feed and "feed" not in chosen:
        chosen.append("feed")
    if "notifications" in chosen:
        check_notify_config(settings)
    names = instance_names(chosen, instances)  # `risk-1`, `risk-2`, ... with several instances
    if not web:
        ports: dict[str, int] = {}
    elif web_port is not None:
        ports = stage_web_ports(names, web_port) if web_port else dict.fromkeys(names, 0)
    elif instances > 1:
        ports = dict.fromkeys(names, 0)  # instances of one stage cannot share its port
    else:
        ports = {name: settings.port_of(stage_of(name)) for name in names}
    if ports and max(ports.values()) > 65535:
        raise UserError(f"--web-port {web_port}: {len(names)} workers need ports up to {max(ports.values())}")
    for name, port in ports.items():
        check_port_free(
            settings.metrics.host,
            port,
            what=f"the {name} stage",
            setting=f"P95_PORTS__{stage_of(name).upper()} or --web-port",
        )
    if os.environ.get(SUPERVISED_ENV) != "1":  # what `p95 worker` supervises retries instead
        from phoenix95.stack.ready import preflight as stores_preflight

        stores_preflight(settings, ("broker",) if chosen == ["feed"] else ("broker", "postgres", "redis"))
    from phoenix95.streams.wiring import prepare

    prepare(settings)
    from phoenix95.cli.exchange import preflight as exchange_preflight

    exchange_preflight(settings, chosen)  # wrong keys: one line, before any worker starts
    if check:
        from rich.console import Console

        Console(stderr=True).print(
            f"ready to run {', '.join(chosen)}: the stores answer, the topics exist, the schema is migrated"
        )
        return
    if len(names) == 1:
        if chosen[0] == "feed":
            if settings.feed_source() == "binance":
                run_feed(settings)
            else:
                run_feed_stage(settings, web_port=ports.get("feed"))
        else:
            run_stage(chosen[0], web_port=ports.get(chosen[0]), log_level=log_level)
        return
    from phoenix95.streams.supervisor import WorkerSet

    workers = WorkerSet(
        chosen, log_dir=settings.home / "logs", web_ports=ports, log_level=log_level, instances=instances
    )
    logger.info("supervising %s", ", ".join(names))
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
        console.print(f"{stage}: http://{host}:{port}/metrics")
        console.print(f"{stage}: http://{host}:{port}/health")


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
    import asyncio

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
    if settings.kafka.consumer_loop == "direct":
        from phoenix95.streams.direct import DirectStageWorker

        direct = DirectStageWorker(settings, stage, web_port=web_port, metrics=metrics, lag=lag)
        if metrics is not None and stage == "positions" and settings.risk.clock == "wall":
            metrics.resolve_signal_times_with(signal_ingest_times(direct.runtime))
        _log_like_faust(log_level)
        asyncio.run(direct.run())
        return
    app = create_app(settings, stage, web_port=web_port, metrics=metrics, lag=lag)
    if metrics is not None and stage == "positions" and settings.risk.clock == "wall":
        metrics.resolve_signal_times_with(signal_ingest_times(app.p95_runtime))  # type: ignore[attr-defined]
    worker = faust.Worker(app, loglevel=log_level.upper(), quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


def _log_like_faust(level: str) -> None:
    """The direct loop's log lines in a Faust worker's format (`[time] [pid] [LEVEL] message`)."""
    logging.basicConfig(
        level=level.upper(), format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s", force=True
    )
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLogger().level))


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
