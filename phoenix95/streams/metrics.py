"""Prometheus metrics of a stage worker, served on its web port at /metrics.

The stage runner feeds them after each batch (`observe_batch`, `observe_outcomes`). Trading figures
come from the facts a stage persisted (new decisions only: a re-delivered input produces its stored
event again but persists nothing) and the events it produced. Money becomes float here, for telemetry
only. End-to-end latencies are wall-clock figures: with the event clock (replays, the demo) the
signal times are historical, so they are not observed then.

Signal -> position: a position event carries the signal's id but not its time (each stage stamps its
own `ts_ingest`, and an order carries its fill time), so the positions worker looks the signal's
ingest time up in the `signals` row the analysis stage wrote (`received_at` is the signal's
`ts_ingest`) with the lookup it is given (`resolve_signal_times_with`), off the hot path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.process_collector import ProcessCollector

from phoenix95.agents.ports import (
    InputRecord,
    OrderPlaced,
    Outcome,
    PositionChanged,
    SignalAnalyzed,
    Sink,
    VerdictMade,
)
from phoenix95.schemas import topics as topic_names
from phoenix95.schemas.codec import Reason
from phoenix95.schemas.envelope import utc_now
from phoenix95.schemas.messages import PositionEvent, RiskVerdict

if TYPE_CHECKING:
    from phoenix95.monitoring.monitor import LagMonitor

logger = logging.getLogger(__name__)

Clock = Literal["wall", "event"]
#: signal ids -> each signal's ingest time (`ts_ingest`); ids it does not know are left out.
SignalTimes = Callable[[Sequence[str]], Awaitable[Mapping[str, datetime]]]
#: Prometheus text format 0.0.4.
EXPOSITION_CONTENT_TYPE = "text/plain; version=0.0.4"

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)
_SCORE_BUCKETS = tuple(round(step * 0.05, 2) for step in range(1, 21))
_DISTANCE_BUCKETS = (1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0)


class PipelineMetrics:
    def __init__(self, stage: str, registry: CollectorRegistry | None = None, *, clock: Clock | None = None):
        self.stage = stage
        if registry is None:
            registry = CollectorRegistry()
            ProcessCollector(registry=registry)  # process_cpu_seconds_total & co. (the CPU alert)
        self.registry = registry
        self.clock: Clock = clock if clock is not None else _configured_clock()
        self._stage_metrics(registry)
        self._latency_metrics(registry)
        self._trading_metrics(registry)
        self._position_metrics(registry)
        #: Open positions seen by this worker: id -> latest event (for the per-symbol PnL sums).
        self._open: dict[str, PositionEvent] = {}
        self._signal_times: SignalTimes | None = None
        #: Positions opened whose signal's ingest time is still to be looked up: (signal id, written at).
        self._awaiting_signal: list[tuple[str, datetime]] = []
        self._resolving: asyncio.Task[None] | None = None

    # -- definitions -------------------------------------------------------------------------------

    def _stage_metrics(self, registry: CollectorRegistry) -> None:
        self.processed = Counter(
            "p95_stage_processed_total", "Input records finished by a stage", ["stage"], registry=registry
        )
        self.dead_lettered = Counter(
            "p95_stage_dead_lettered_total",
            "Input records sent to the dead-letter topic",
            ["stage", "reason"],
            registry=registry,
        )
        self.failed = Counter(
            "p95_stage_failed_writes_total", "Inputs whose writes failed permanently", ["stage"], registry=registry
        )
        self.produced = Counter(
            "p95_stage_produced_total", "Events produced by a stage", ["stage", "event"], registry=registry
        )
        self.batch_seconds = Histogram(
            "p95_stage_batch_seconds",
            "Decode to outputs written, per batch",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "p95_stage_batch_size", "Records per batch", ["stage"], buckets=_BATCH_BUCKETS, registry=registry
        )
        self.last_batch = Gauge(
            "p95_stage_last_batch_timestamp_seconds",
            "When the stage last finished a batch",
            ["stage"],
            registry=registry,
        )
        self.sink_seconds = Histogram(
            "p95_stage_sink_write_seconds",
            "Writing a batch's facts to the stores (PostgreSQL, Redis, time series)",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.sink_retries = Counter(
            "p95_stage_sink_retries_total",
            "Store writes retried after a transient failure (store down, statement timeout) while the partition waits",
            ["stage", "store"],
            registry=registry,
        )

    def _latency_metrics(self, registry: CollectorRegistry) -> None:
        self.input_age = Histogram(
            "p95_stage_input_age_seconds",
            "Input message written to the broker -> its outputs written (one hop: queueing + processing)",
            ["stage", "topic"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.signal_to_analysis = Histogram(
            "p95_signal_to_analysis_seconds",
            "Signal ingested -> analysis written (wall clock only)",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.signal_to_order = Histogram(
            "p95_signal_to_order_seconds",
            "Signal time (the source's timestamp, else its ingest) -> filled order written (wall clock only)",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.order_to_position = Histogram(
            "p95_order_to_position_seconds",
            "Filled order written to the broker -> position opened and written",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.signal_to_position = Histogram(
            "p95_signal_to_position_seconds",
            "Signal ingested (its ts_ingest) -> position opened and written (wall clock only)",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )

    def _trading_metrics(self, registry: CollectorRegistry) -> None:
        self.phoenix95_score = Histogram(
            "p95_phoenix95_score", "Phoenix-95 score of analysed signals", buckets=_SCORE_BUCKETS, registry=registry
        )
        self.verdicts = Counter(
            "p95_risk_verdicts_total", "Risk verdicts made", ["decision", "intent"], registry=registry
        )
        self.rejections = Counter(
            "p95_risk_rejections_total", "Reasons of rejected verdicts", ["reason"], registry=registry
        )
        self.planned_var = Gauge(
            "p95_planned_var_1d_95_usdt",
            "1-day 95 % value at risk of the latest approved position plan, per symbol",
            ["symbol"],
            registry=registry,
        )
        self.trades = Counter(
            "p95_leveraged_trades_total",
            "Filled leveraged orders",
            ["symbol", "side", "intent", "leverage"],
            registry=registry,
        )
        self.traded_notional = Counter(
            "p95_traded_notional_usdt_total", "Notional of filled orders", ["symbol"], registry=registry
        )
        self.orders_rejected = Counter(
            "p95_orders_rejected_total", "Orders the exchange rejected", ["reason"], registry=registry
        )

    def _position_metrics(self, registry: CollectorRegistry) -> None:
        self.position_events = Counter(
            "p95_position_events_total",
            "Position events (opened, tick, funding, closed...)",
            ["kind"],
            registry=registry,
        )
        self.open_positions = Gauge("p95_open_positions", "Open positions", ["symbol"], registry=registry)
        self.unrealized_pnl = Gauge(
            "p95_unrealized_pnl_usdt", "Unrealized PnL of the open positions, per symbol", ["symbol"], registry=registry
        )
        self.distance_to_liquidation = Gauge(
            "p95_position_distance_to_liquidation_percent",
            "Distance from the mark price to the liquidation price, in % of the mark price, per open position",
            ["symbol", "side", "position_id"],
            registry=registry,
        )
        self.distance_distribution = Histogram(
            "p95_distance_to_liquidation_percent",
            "Distance to liquidation (%) at every event of an open position",
            buckets=_DISTANCE_BUCKETS,
            registry=registry,
        )

    # -- observing ---------------------------------------------------------------------------------

    def observe_batch(self, stage: str, size: int, seconds: float) -> None:
        self.batch_seconds.labels(stage).observe(seconds)
        self.batch_size.labels(stage).observe(size)
        self.last_batch.labels(stage).set(time.time())

    def observe_sink_write(self, stage: str, seconds: float) -> None:
        self.sink_seconds.labels(stage).observe(seconds)

    def sink_retry_hook(self, stage: str, store: str) -> Callable[[int, BaseException], None]:
        """For a store's `on_retry`: counts its retried writes in `p95_stage_sink_retries_total`."""
        counter = self.sink_retries.labels(stage, store)

        def retried(attempt: int, error: BaseException) -> None:
            counter.inc()

        return retried

    def observe_outcomes(self, stage: str, outcomes: Sequence[Outcome]) -> None:
        now = utc_now()
        processed = 0
        #: topic -> its `p95_stage_input_age_seconds` child (a label lookup costs more than the observation)
        ages: dict[str, Histogram] = {}
        for outcome in outcomes:
            record = outcome.record
            if record.partition >= 0:  # not a timer's pseudo-record
                processed += 1
                if record.timestamp is not None:
                    age = ages.get(record.topic)
                    if age is None:
                        age = ages[record.topic] = self.input_age.labels(stage, _base_topic(record.topic))
                    age.observe(max(0.0, (now - record.timestamp).total_seconds()))
            if outcome.dead_letter is not None:
                self.dead_lettered.labels(stage, outcome.dead_letter.reason).inc()
                self.produced.labels(stage, "DeadLetter").inc()
                if outcome.dead_letter.reason == Reason.SINK_REJECTED:
                    self.failed.labels(stage).inc()
            for event in outcome.produce:
                self.produced.labels(stage, type(event).__name__).inc()
            for fact in outcome.persist:
                if isinstance(fact, SignalAnalyzed):
                    self._on_analysis(fact, now)
                elif isinstance(fact, VerdictMade):
                    self._on_verdict(fact.verdict)
                elif isinstance(fact, OrderPlaced):
                    self._on_order(fact, now)
                elif isinstance(fact, PositionChanged):
                    self._on_position(fact.event, record, now)
        if processed:
            self.processed.labels(stage).inc(processed)

    def _wall_latency(self, histogram: Histogram, since: datetime, now: datetime) -> None:
        if self.clock == "wall":
            histogram.observe(max(0.0, (now - since).total_seconds()))

    def _on_analysis(self, fact: SignalAnalyzed, now: datetime) -> None:
        self.phoenix95_score.observe(float(fact.analysis.phoenix95_score))
        self._wall_latency(self.signal_to_analysis, fact.signal.ts_ingest, now)

    def _on_verdict(self, verdict: RiskVerdict) -> None:
        self.verdicts.labels(verdict.decision, verdict.intent).inc()
        if not verdict.approved:
            for reason in verdict.reasons:
                self.rejections.labels(reason).inc()
        elif verdict.plan is not None and verdict.plan.var_1d_95 is not None:
            self.planned_var.labels(verdict.symbol).set(float(verdict.plan.var_1d_95))

    def _on_order(self, fact: OrderPlaced, now: datetime) -> None:
        order = fact.order
        if order.status != "filled" or order.fill is None:
            self.orders_rejected.labels(order.reject_reason or "unknown").inc()
            return
        self.trades.labels(order.symbol, order.position_side, order.intent, str(order.leverage)).inc()
        self.traded_notional.labels(order.symbol).inc(float(order.fill.notional))
        self._wall_latency(self.signal_to_order, fact.verdict.signal_time, now)

    def _on_position(self, event: PositionEvent, record: InputRecord, now: datetime) -> None:
        self.position_events.labels(event.kind).inc()
        if event.kind == "opened":
            if record.timestamp is not None:
                self.order_to_position.observe(max(0.0, (now - record.timestamp).total_seconds()))
            if self.clock == "wall" and self._signal_times is not None:
                self._awaiting_signal.append((event.signal_id, now))
                self._resolve_soon()
        labels = (event.symbol, event.side, event.position_id)
        if event.status == "open":
            self._open[event.position_id] = event
            distance = float(event.distance_to_liquidation)
            self.distance_to_liquidation.labels(*labels).set(distance)
            self.distance_distribution.observe(distance)
        elif self._open.pop(event.position_id, None) is not None:
            self.distance_to_liquidation.remove(*labels)
        open_here = [p for p in self._open.values() if p.symbol == event.symbol]
        self.open_positions.labels(event.symbol).set(len(open_here))
        self.unrealized_pnl.labels(event.symbol).set(float(sum(p.unrealized_pnl for p in open_here)))

    def resolve_signal_times_with(self, lookup: SignalTimes) -> None:
        """Observe `p95_signal_to_position_seconds`, finding signals' ingest times with `lookup`."""
        self._signal_times = lookup

    def _resolve_soon(self) -> None:
        if self._resolving is not None and not self._resolving.done():
            return  # the running lookup takes the new ones too
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a synchronous caller): looked up with the next position opened in one
        self._resolving = loop.create_task(self.resolve_signal_times(), name="p95-signal-times")

    async def resolve_signal_times(self) -> None:
        """Look up the ingest times of the signals of the positions opened so far and observe them.
        Telemetry only: a failed lookup is logged and its positions are not observed."""
        while self._awaiting_signal and self._signal_times is not None:
            awaiting, self._awaiting_signal = self._awaiting_signal, []
            try:
                found = await self._signal_times(list(dict.fromkeys(signal_id for signal_id, _ in awaiting)))
            except Exception as error:
                logger.warning("metrics: signal ingest times not found for %d positions: %s", len(awaiting), error)
                continue
            for signal_id, written_at in awaiting:
                ingested = found.get(signal_id)
                if ingested is None:
                    logger.info("metrics: signal %s of a new position is not in the signals table", signal_id)
                    continue
                self.signal_to_position.observe(max(0.0, (written_at - ingested).total_seconds()))

    # -- exposing ----------------------------------------------------------------------------------

    def attach_lag(self, monitor: LagMonitor) -> None:
        """Expose a lag monitor's figures (p95_consumer_*) with this worker's metrics."""
        from phoenix95.monitoring.exporter import LagCollector

        self.registry.register(LagCollector(monitor))

    def exposition(self) -> tuple[bytes, str]:
        """Body and content type of /metrics. The type carries no charset (UTF-8 is the format's
        default): Faust's aiohttp driver refuses a content type with one (HTTP 500)."""
        return generate_latest(self.registry), EXPOSITION_CONTENT_TYPE


class TimedSink:
    """A stage's sink, timed: `p95_stage_sink_write_seconds` (wrap the sink where the runner is built)."""

    def __init__(self, sink: Sink, metrics: PipelineMetrics):
        self.sink = sink
        self.metrics = metrics

    async def persist(self, stage: str, outcomes: Sequence[Outcome]) -> list[tuple[int, Exception]]:
        started = time.perf_counter()
        try:
            return await self.sink.persist(stage, outcomes)
        finally:
            self.metrics.observe_sink_write(stage, time.perf_counter() - started)


def _base_topic(name: str) -> str:
    """The topic without the namespace prefix (`t1a2b.p95.signals` -> `p95.signals`)."""
    for base in topic_names.ALL:
        if name == base or name.endswith("." + base):
            return base
    return name


def _configured_clock() -> Clock:
    from phoenix95.settings import get_settings

    return get_settings().risk.clock


class ComplianceGauges:
    """The compliance monitor's book figures as gauges on its /metrics (agents/compliance.FiguresBoard)."""

    def __init__(self, registry: CollectorRegistry):
        self.equity = Gauge("p95_compliance_equity_usdt", "Equity as the compliance monitor sees it", registry=registry)
        self.day_pnl = Gauge(
            "p95_compliance_day_pnl_usdt", "Realized and unrealized PnL of the trading day", registry=registry
        )
        self.drawdown = Gauge(
            "p95_compliance_drawdown_percent", "Drawdown from the equity peak, in %", registry=registry
        )
        self.orders_per_minute = Gauge(
            "p95_compliance_orders_per_minute", "Orders in the last minute (event time)", registry=registry
        )
        self.exposure = Gauge("p95_compliance_exposure_usdt", "Open notional per symbol", ["symbol"], registry=registry)
        self.total_exposure = Gauge("p95_compliance_total_exposure_usdt", "Open notional in total", registry=registry)
        self.streak = Gauge(
            "p95_compliance_stop_loss_streak",
            "Stop-losses in a row, per symbol and in total (symbol *)",
            ["symbol"],
            registry=registry,
        )
        self._symbols: set[str] = set()
        self._streaks: set[str] = set()

    async def publish(self, figures: dict[str, Any]) -> None:
        self.equity.set(float(figures["equity"]))
        self.day_pnl.set(float(figures["day_pnl"]))
        self.drawdown.set(float(figures["drawdown_pct"]))
        self.orders_per_minute.set(figures["orders_per_minute"])
        self.total_exposure.set(float(figures["total_exposure"]))
        exposure = figures["exposure"]
        for symbol in self._symbols - set(exposure):
            self.exposure.labels(symbol).set(0)
        for symbol, value in exposure.items():
            self.exposure.labels(symbol).set(float(value))
        self._symbols |= set(exposure)
        streaks = figures["stop_loss_streaks"]
        for key in self._streaks - set(streaks):
            self.streak.labels(key).set(0)
        for key, count in streaks.items():
            self.streak.labels(key).set(count)
        self._streaks |= set(streaks)
