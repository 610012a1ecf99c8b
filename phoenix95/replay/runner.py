"""A replay run: gather the inputs, apply the what-if settings, run a mode, summarise, digest, report."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from phoenix95.agents.risk_desk import closed_fact
from phoenix95.connectors.market_data import bundled_funding
from phoenix95.domain.execution import MarketTick
from phoenix95.domain.funding import FundingSchedule
from phoenix95.domain.protections import trips_of
from phoenix95.replay import sources
from phoenix95.replay.digest import digest, lines_of, trip_line
from phoenix95.replay.engine import InProcessEngine, merged
from phoenix95.replay.summary import summarize
from phoenix95.schemas.codec import Codec
from phoenix95.schemas.messages import Signal
from phoenix95.settings import Settings

SAMPLE_SIGNALS = "sample"
DEFAULT_PRICES = "XRPUSDT-5m-futures_last.csv.gz"


@dataclass
class ReplayRequest:
    mode: Literal["inprocess", "kafka"] = "inprocess"
    signals_file: str | None = None
    signals_table: bool = False
    signals_topic: str | None = None
    prices_files: list[str] = field(default_factory=list)
    prices_topic: str | None = None
    simulate: list[str] = field(default_factory=list)
    since: datetime | None = None
    until: datetime | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    speed: float = 0.0
    report: Path | None = None


def parse_overrides(assignments: Sequence[str]) -> dict[str, str]:
    """`risk.leverage=10` -> {"P95_RISK__LEVERAGE": "10"} (the settings' environment form)."""
    overrides = {}
    for assignment in assignments:
        key, separator, value = assignment.partition("=")
        if not separator or not key.strip():
            raise ValueError(f"--set wants section.field=value, got {assignment!r}")
        overrides["P95_" + "__".join(part.strip().upper() for part in key.split("."))] = value.strip()
    return overrides


@contextmanager
def environment(overrides: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def settings_with(overrides: dict[str, str]) -> Settings:
    with environment(overrides):
        try:
            return Settings()
        except Exception as error:
            raise ValueError(f"invalid --set: {error}") from error


def sample_signals_path() -> Path:
    return Path(str(resources.files("phoenix95.data.samples").joinpath("xrpusdt-signals.jsonl")))


@dataclass
class Inputs:
    signals: list[Signal]
    ticks: list[MarketTick]
    bad: list[sources.BadLine] = field(default_factory=list)
    #: Where the events came from (for the summary): "signals" and "prices" descriptions.
    described: dict[str, Any] = field(default_factory=dict)


async def load_inputs(settings: Settings, request: ReplayRequest) -> Inputs:
    bad: list[sources.BadLine] = []
    signals: list[Signal]
    codec = Codec.for_settings(settings)
    described: dict[str, Any] = {}
    if request.signals_file:
        path = sample_signals_path() if request.signals_file == SAMPLE_SIGNALS else Path(request.signals_file)
        signals, bad = sources.read_signals_file(path)
        described["signals"] = {"kind": "file", "path": str(path)}
    elif request.signals_table:
        signals = await sources.signals_from_table(
            settings.postgres_url(), settings.postgres.db_schema, start=request.since, until=request.until
        )
        described["signals"] = {"kind": "table", "schema": settings.postgres.db_schema, "table": "signals"}
    elif request.signals_topic:
        read = await sources.read_topic(
            settings.kafka.bootstrap_servers,
            request.signals_topic,
            start=request.since,
            until=request.until,
            codec=codec,
        )
        signals = read.events
        described["signals"] = {"kind": "topic", **read.stats()}
    else:
        raise sources.SourceError(
            "no signals: give --signals FILE (or 'sample'), --signals-table or --signals-topic TOPIC"
        )
    if request.since is not None:
        signals = [s for s in signals if s.ts_event >= request.since]
    if request.until is not None:
        signals = [s for s in signals if s.ts_event < request.until]
    # event-time order, ties by signal id: the order the risk stage decides them in (risk.py)
    signals = sorted(signals, key=lambda s: (s.ts_event, s.signal_id))
    ticks: list[MarketTick] = []
    prices: list[dict[str, Any]] = []
    for name in request.prices_files:
        found = sources.read_price_file(name)
        ticks.extend(found)
        prices.append({"kind": "file", "name": name, "ticks": len(found)})
    if request.prices_topic:
        from phoenix95.schemas.convert import tick_of

        read = await sources.read_topic(
            settings.kafka.bootstrap_servers,
            request.prices_topic,
            start=request.since,
            until=request.until,
            codec=codec,
        )
        ticks.extend(tick_of(p) for p in read.events)
        prices.append({"kind": "topic", "ticks": len(read.events), **read.stats()})
    if not request.prices_files and not request.prices_topic and not request.simulate:
        found = sources.read_price_file(DEFAULT_PRICES)
        ticks.extend(found)
        prices.append({"kind": "file", "name": DEFAULT_PRICES, "ticks": len(found)})
    if request.simulate:
        start, end = sources.span(signals, ticks)
        for spec in request.simulate:
            found = sources.simulated_prices(spec, start=start, end=end)
            ticks.extend(found)
            prices.append({"kind": "simulated", "spec": spec, "ticks": len(found)})
    priced = {t.symbol for t in ticks}
    missing = sorted({s.symbol for s in signals} - priced)
    if missing:
        start, end = sources.span(signals, ticks)
        for symbol in missing:
            first = next(s.price for s in signals if s.symbol == symbol)
            found = sources.simulated_prices(f"{symbol}:{first}", start=start, end=end)
            ticks.extend(found)
            prices.append(
                {"kind": "simulated", "spec": f"{symbol}:{first}", "ticks": len(found), "why": "no prices given"}
            )
    ticks.sort(key=lambda t: (t.time, t.symbol))
    described["prices"] = prices
    return Inputs(signals, ticks, bad, described)


def run(
    request: ReplayRequest, *, base: Settings, on_progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    settings = settings_with(request.overrides) if request.overrides else base
    inputs = asyncio.run(load_inputs(settings, request))
    signals, ticks, bad = inputs.signals, inputs.ticks, inputs.bad
    # the risk stage's own config (with compliance.price_collar_bps), so both modes collar alike
    from phoenix95.streams.wiring import brackets_for, trading_config

    config = trading_config(settings)
    protections = settings.compliance.protection_config()

    brackets = brackets_for(settings)
    started = time.perf_counter()
    total = len(signals) + len(ticks)
    if request.mode == "inprocess":
        engine = InProcessEngine(
            config,
            brackets,
            funding=FundingSchedule(config.default_funding_rate, bundled_funding()),
            on_progress=(lambda done: on_progress(done, total)) if on_progress else None,
            keep_position_events=False,
            protections=protections,
        )
        result = engine.run(merged(signals, ticks), already_sorted=True)
        elapsed = result.elapsed_s
        closed, open_positions, verdicts, orders = result.closed, result.open, result.verdicts, result.orders
        lines = lines_of(result.orders, result.closed)
        curve = result.equity_curve
        extra: dict[str, Any] = {"monitoring_ticks": result.monitoring_ticks}
    else:
        from phoenix95.replay.kafka_mode import equity_curve, run_kafka

        kafka = asyncio.run(
            run_kafka(
                settings, signals, ticks, overrides=request.overrides, speed=request.speed, on_progress=on_progress
            )
        )
        elapsed = kafka.elapsed_s
        closed, open_positions, verdicts, orders = kafka.closed, kafka.open, kafka.verdicts, kafka.orders  # type: ignore[assignment]
        lines = kafka.lines
        first = min([s.ts_event for s in signals] + ([ticks[0].time] if ticks else []), default=None)
        curve = equity_curve(closed, config.starting_equity, first)
        extra = {
            "run_id": kafka.run_id,
            "speed": request.speed,
            "publish_s": round(kafka.publish_s, 3),
            "startup_s": round(kafka.startup_s, 3),
        }
    # the trips the run's closes cause, from the closes in canonical order: the same in both modes
    trips = trips_of((closed_fact(p) for p in closed), protections, config.starting_equity)
    lines = [*lines, *(trip_line(trip) for trip in trips)]
    summary = summarize(
        closed=closed,
        open_positions=open_positions,
        verdicts=verdicts,
        orders=orders,
        curve=curve,
        starting_equity=config.starting_equity,
        first_time=curve[0][0] if curve else None,
        last_time=max([ticks[-1].time] if ticks else [], default=None),
    )
    summary.update(
        {
            "mode": request.mode,
            "events": total,
            "signals": len(signals),
            "prices": len(ticks),
            "invalid_signal_lines": [{"line": b.line, "error": b.error} for b in bad],
            "digest": digest(lines),
            "protections": [
                {
                    "reason": trip.reason,
                    "at": trip.at.isoformat(),
                    "subject": trip.lock.symbol if trip.lock is not None else None,
                    "until": trip.lock.until.isoformat() if trip.lock is not None else None,
                    "halt": trip.halt,
                    "message": trip.message,
                }
                for trip in trips
            ],
            "elapsed_s": round(elapsed, 3),
            "events_per_s": round(total / elapsed, 1) if elapsed > 0 else None,
            "settings": {key: value for key, value in request.overrides.items()},
            "wall_s": round(time.perf_counter() - started, 3),
            "sources": inputs.described,
            **extra,
        }
    )
    if request.report is not None:
        from phoenix95.replay.report import render

        traded = {p.symbol for p in closed}
        prices: dict[str, list[tuple[datetime, Decimal]]] = {}
        for tick in ticks:
            if tick.symbol in traded:
                prices.setdefault(tick.symbol, []).append((tick.time, tick.price))
        request.report.write_text(
            render(summary, curve, closed, title=f"Phoenix95 replay ({request.mode})", prices=prices),
            encoding="utf-8",
        )
        summary["report"] = str(request.report)
    return summary


def decimal_to_text(value: Any) -> Any:
    return format(value, "f") if isinstance(value, Decimal) else value
