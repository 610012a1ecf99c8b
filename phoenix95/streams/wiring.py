"""Builds a stage with its adapters: the only place where agents, storage and connectors meet."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from phoenix95.agents.analysis import AnalysisStage
from phoenix95.agents.base import Stage, StageRunner
from phoenix95.agents.compliance import ComplianceStage
from phoenix95.agents.execution import ExecutionStage
from phoenix95.agents.ports import Sink
from phoenix95.agents.positions import PositionStage
from phoenix95.agents.risk import RiskStage
from phoenix95.connectors.exchange.brackets import brackets_from_file, bundled_brackets
from phoenix95.connectors.exchange.factory import build_exchange
from phoenix95.connectors.kafka_admin import ensure_topics
from phoenix95.connectors.market_data import bundled_funding
from phoenix95.domain.brackets import BracketTable
from phoenix95.domain.config import DEFAULT_SYMBOL_RULES, TradingConfig
from phoenix95.domain.funding import FundingSchedule
from phoenix95.schemas.codec import Codec
from phoenix95.schemas.topics import Topics
from phoenix95.settings import Settings
from phoenix95.storage.audit import record_configuration, settings_digest
from phoenix95.storage.compliance import LockCache, PgComplianceStore, RedisFiguresBoard
from phoenix95.storage.outbox import PgOutbox
from phoenix95.storage.postgres import Database, migrate
from phoenix95.storage.readers import PgExecutionState, PgPortfolio, PgPositionStore, PgSeenSignals
from phoenix95.storage.redis_state import RedisState
from phoenix95.storage.sink import StoreSink
from phoenix95.storage.timeseries import TimeseriesSink
from phoenix95.streams import stages
from phoenix95.streams.metrics import ComplianceGauges, TimedSink
from phoenix95.streams.producer import EventProducer, LazyProducer

logger = logging.getLogger(__name__)


def brackets_for(settings: Settings) -> BracketTable:
    if settings.risk.brackets_file is not None:
        return brackets_from_file(str(settings.risk.brackets_file))
    return bundled_brackets()


def trading_config(settings: Settings) -> TradingConfig:
    config = settings.risk.trading_config()
    if settings.compliance.price_collar_bps is not None:
        config = config.with_changes(price_collar_bps=settings.compliance.price_collar_bps)
    return config


def codec_for(settings: Settings) -> Codec:
    return Codec.for_settings(settings)


@dataclass
class StageRuntime:
    """A running stage: its resources, the stage and the runner that drives it."""

    settings: Settings
    stage_name: str
    database: Database | None = None
    redis: RedisState | None = None
    timeseries: TimeseriesSink | None = None
    producer: EventProducer | None = None
    runner: StageRunner | None = None
    metrics: Any = None
    lag: Any = None
    #: The symbols this instance owns (`streams/ownership.py`), kept by the app's rebalance hooks.
    ownership: Any = None
    _started: bool = field(default=False, repr=False)

    async def start(self) -> StageRunner:
        if self.runner is not None and self._started:
            return self.runner
        settings = self.settings
        topics = Topics(settings.namespace)
        await migrate(settings.postgres_url(), settings.postgres.db_schema, wait=True)
        self.database = Database(
            settings.postgres_url(),
            schema=settings.postgres.db_schema,
            min_size=settings.postgres.pool_min_size,
            max_size=settings.postgres.pool_max_size,
            connect_timeout=settings.postgres.connect_timeout_s,
            statement_timeout=settings.postgres.statement_timeout_s or None,
        )
        await self.database.open()
        self.redis = RedisState.from_url(
            settings.redis_url(),
            prefix=settings.redis.prefix,
            price_ttl=settings.redis.price_ttl_s,
            analysis_ttl=settings.redis.analysis_ttl_s,
            metrics_ttl=settings.redis.metrics_ttl_s,
        )
        self.timeseries = TimeseriesSink(
            settings.influx.url if settings.influx.enabled else None,
            token=settings.influx.token.get_secret_value(),
            org=settings.influx.org,
            bucket=settings.influx.bucket,
            namespace=settings.namespace,
            timeout_s=settings.influx.timeout_s,
            buckets=settings.influx.buckets,
        )
        codec = codec_for(settings)
        codec.prepare()
        self.producer = EventProducer(
            settings.kafka.bootstrap_servers,
            topics,
            codec,
            linger_ms=settings.kafka.linger_ms,
            client_id=f"phoenix95-{self.stage_name}",
            enable_idempotence=settings.kafka.idempotent_producer,
        )
        await self.producer.start()
        if self.lag is not None:
            await self.lag.start()  # a first sample now, then every second in the background
        stage = build_stage(
            self.stage_name,
            settings,
            codec,
            self.database,
            lag=self.lag,
            metrics=self.metrics,
            ownership=self.ownership,
            redis=self.redis,
        )
        await stage.start()
        await record_configuration(
            self.database, actor=f"stage:{self.stage_name}", digest=settings_digest(settings.masked())
        )
        # a stage that writes its own rows (the notification hub's outbox) brings its sink
        own_sink: Sink | None = getattr(stage, "own_sink", None)
        sink: Sink = (
            own_sink
            if own_sink is not None
            else StoreSink(self.database, self.redis, self.timeseries, audit=settings.compliance.audit_enabled)
        )
        if self.metrics is not None:
            sink = TimedSink(sink, self.metrics)  # p95_stage_sink_write_seconds
            self.database.on_retry = self.metrics.sink_retry_hook(self.stage_name, "postgres")
            self.redis.on_retry = self.metrics.sink_retry_hook(self.stage_name, "redis")
            self.timeseries.on_retry = self.metrics.sink_retry_hook(self.stage_name, "timeseries")
        outbox = PgOutbox(self.database, codec) if stage.uses_outbox else None
        self.runner = StageRunner(stage, sink, self.producer, metrics=self.metrics, outbox=outbox)
        await self.runner.drain_outbox()  # before the first batch: what a killed worker left
        self._started = True
        await self._announce("started", "info")
        return self.runner

    async def _announce(self, state: str, severity: str) -> None:
        """A worker event on p95.control.events ("started", "stopping") for the notification hub."""
        from phoenix95.notify.heartbeat import worker_event

        if self.producer is None:
            return
        try:
            await asyncio.wait_for(self.producer.publish([worker_event(self.stage_name, state, severity)]), 5.0)
        except Exception as error:  # never blocks a start or a shutdown
            logger.warning("stage %s: could not announce %s: %s", self.stage_name, state, error)

    async def stop(self) -> None:
        if self._started:
            await self._announce("stopping", "warning")
        if self.runner is not None:
            await self.runner.stage.stop()
        if self.lag is not None:
            await self.lag.stop()
        if self.producer is not None:
            await self.producer.stop()
        if self.timeseries is not None:
            await self.timeseries.close()
        if self.redis is not None:
            await self.redis.close()
        if self.database is not None:
            await self.database.close()
        self._started = False


def prepare(settings: Settings) -> None:
    """Create the topics and apply the migrations before any worker starts (`p95 worker`, the demo,
    Kafka-mode replays and the bench call it)."""

    async def run() -> None:
        topics = Topics(settings.namespace)
        await ensure_topics(
            settings.kafka.bootstrap_servers,
            topics.all(),
            partitions=settings.kafka.partitions,
            replication_factor=settings.kafka.replication_factor,
            counts=topics.partition_counts(settings.kafka.partitions, settings.risk.clock),
        )
        await migrate(settings.postgres_url(), settings.postgres.db_schema, wait=True)

    asyncio.run(run())


@dataclass(frozen=True)
class StageContext:
    """What a stage builder gets: the settings and the resources of the stage's process."""

    settings: Settings
    codec: Codec
    database: Database
    lag: Any = None
    #: The process's PipelineMetrics (its registry serves /metrics), if it serves them.
    metrics: Any = None
    ownership: Any = None
    redis: RedisState | None = None

    @property
    def topics(self) -> Topics:
        return Topics(self.settings.namespace)

    @property
    def config(self) -> TradingConfig:
        return trading_config(self.settings)

    @property
    def brackets(self) -> BracketTable:
        return brackets_for(self.settings)


def _build_analysis(context: StageContext) -> Stage:
    brackets, config = context.brackets, context.config
    known = frozenset(brackets.symbols()) | frozenset(DEFAULT_SYMBOL_RULES) | config.allowed_symbols
    return AnalysisStage(context.codec, known, PgSeenSignals(context.database))


def _build_risk(context: StageContext) -> Stage:
    settings, config, brackets = context.settings, context.config, context.brackets
    return RiskStage(
        context.codec,
        config,
        brackets,
        PgPortfolio(context.database, config.starting_equity, brackets, config.funding_interval),
        clock=settings.risk.clock,
        lag=context.lag,
        max_lag_seconds=settings.risk.max_pipeline_lag_s,
        prices_topic=context.topics.market_prices,
        funding=FundingSchedule(config.default_funding_rate, bundled_funding()),
        hold_timeout=settings.execution.quiet_feed_fill_after_s,
        locks=LockCache(context.database).get,
        max_market_data_age_seconds=settings.market_data_age_limit() if settings.risk.clock == "wall" else None,
        symbol_rules=_exchange_ledger(context),
        protections=settings.compliance.protection_config(),
    )


def _build_execution(context: StageContext) -> Stage:
    settings, config = context.settings, context.config
    return ExecutionStage(
        context.codec,
        build_exchange(settings, context.database, config, publisher=LazyProducer(settings)),
        PgExecutionState(context.database),
        quiet_fill_after=settings.execution.quiet_feed_fill_after_s,
        price_history=settings.execution.price_history,
        prices_topic=context.topics.market_prices,
    )


def _build_positions(context: StageContext) -> Stage:
    settings, config, brackets = context.settings, context.config, context.brackets
    return PositionStage(
        context.codec,
        config,
        brackets,
        PgPositionStore(context.database, brackets, config.funding_interval),
        funding=FundingSchedule(config.default_funding_rate, bundled_funding()),
        clock=settings.risk.clock,
        price_history=settings.execution.price_history,
        prices_topic=context.topics.market_prices,
        mark_interval=timedelta(seconds=settings.risk.mark_interval_s),
        ownership=context.ownership,
        ledger=_exchange_ledger(context),
    )


def _exchange_ledger(context: StageContext) -> Any:
    """A live exchange's filters, protection fills and funding as PostgreSQL holds them; None on paper."""
    if not context.settings.exchange.live():
        return None
    from phoenix95.storage.exchange_ledger import PgExchangeLedger

    return PgExchangeLedger(context.database, context.settings.exchange.kind)


def _build_compliance(context: StageContext) -> Stage:
    settings = context.settings
    boards: list[Any] = []
    if context.redis is not None:
        boards.append(RedisFiguresBoard(context.redis))
    registry = getattr(context.metrics, "registry", None)
    if registry is not None:
        boards.append(ComplianceGauges(registry))
    return ComplianceStage(
        context.codec,
        settings.compliance.protection_config(),
        context.config.starting_equity,
        PgComplianceStore(context.database),
        boards=boards,
    )


def _build_notifications(context: StageContext) -> Stage:
    from phoenix95.notify.runtime import build

    registry = getattr(context.metrics, "registry", None)
    return build(context.settings, context.codec, context.database, registry=registry)


#: One builder per stage of `streams/stages.py` (a new stage adds its builder here).
BUILDERS: dict[str, Callable[[StageContext], Stage]] = {
    stages.ANALYSIS.name: _build_analysis,
    stages.RISK.name: _build_risk,
    stages.EXECUTION.name: _build_execution,
    stages.POSITIONS.name: _build_positions,
    stages.COMPLIANCE.name: _build_compliance,
    stages.NOTIFICATIONS.name: _build_notifications,
}


def build_stage(
    name: str,
    settings: Settings,
    codec: Codec,
    database: Database,
    *,
    lag: Any = None,
    metrics: Any = None,
    ownership: Any = None,
    redis: RedisState | None = None,
) -> Stage:
    stages.spec(name)  # ValueError naming the known stages
    return BUILDERS[name](StageContext(settings, codec, database, lag, metrics, ownership, redis))
