"""`p95 tap --trace SIGNAL_ID`: where is my signal?

Reads the topics a signal travels through (signals -> analysis -> risk verdicts -> orders ->
position ticks, and the dead-letter topic) for the messages of that signal, and asks each stage's
consumer group whether it has committed past them. The signal's own topic is read from `--from`
(default: the beginning); the later topics from a little before the signal's timestamp, found with
the same offset-for-time lookup as `--from TIME`. Every topic is read up to its end offset at the
start. Nothing joins a group or commits.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from phoenix95.connectors import kafka_admin as admin
from phoenix95.schemas import topics as names
from phoenix95.schemas.topics import Topics
from phoenix95.tap.decode import Decoded, Decoder, RawRecord
from phoenix95.tap.filters import REJECT, FilterSpec, RecordFilter
from phoenix95.tap.plan import PartitionPlan, ReadPlan, make_plan
from phoenix95.tap.positions import StartSpec, format_ms
from phoenix95.tap.source import Partition, open_source

#: (base topic, the stage consuming it) in the order a signal travels.
CHAIN: tuple[tuple[str, str | None], ...] = (
    (names.SIGNALS, "analysis"),
    (names.ANALYSIS, "risk"),
    (names.RISK_VERDICTS, "execution"),
    (names.ORDERS, "positions"),
    (names.POSITION_TICKS, None),
)
#: Later topics are read from this long before the signal's timestamp (producers' clocks differ).
DOWNSTREAM_MARGIN_MS = 5 * 60 * 1000
SCAN_TIMEOUT_S = 120.0


@dataclass
class Sighting:
    topic: str
    partition: int
    offset: int
    timestamp: int
    schema: str | None
    summary: str
    value: dict[str, Any] | None = None
    #: The consumer group's committed offset on this partition (None: nothing committed).
    committed: int | None = None

    @property
    def processed(self) -> bool:
        return self.committed is not None and self.committed > self.offset


@dataclass
class Step:
    topic: str
    stage: str | None
    group: str | None
    sightings: list[Sighting] = field(default_factory=list)

    @property
    def processed(self) -> bool | None:
        """Whether the consuming stage committed past every message of the signal here."""
        if self.stage is None or not self.sightings:
            return None
        return all(s.processed for s in self.sightings)


@dataclass
class TraceReport:
    signal_id: str
    steps: list[Step]
    dead_letters: list[Sighting]
    where: str
    found: bool
    seconds: float = 0.0


def trace_signal(
    bootstrap: str,
    namespace: str,
    signal_id: str,
    *,
    start: StartSpec | None = None,
    schema_registry_url: str | None = None,
) -> TraceReport:
    decoder = Decoder.for_registry(schema_registry_url)
    return asyncio.run(_trace(bootstrap, namespace, signal_id, start or StartSpec("beginning"), decoder))


async def _trace(bootstrap: str, namespace: str, signal_id: str, start: StartSpec, decoder: Decoder) -> TraceReport:
    started = time.perf_counter()
    topics = Topics(namespace)
    existing = await _existing(bootstrap)
    steps = [
        Step(topics.name(base), stage, topics.group(stage) if stage else None)
        for base, stage in CHAIN
        if topics.name(base) in existing
    ]
    dlq = topics.dlq if topics.dlq in existing else None
    signal_topic = topics.signals
    first = [step for step in steps if step.topic == signal_topic]
    if first:
        plan = await make_plan(bootstrap, [signal_topic], start=start, until_ms=None, exit_at_end=True)
        first[0].sightings = await _scan(bootstrap, plan, signal_id, decoder)
    later_topics = [step.topic for step in steps if step.topic != signal_topic] + ([dlq] if dlq else [])
    later: list[Sighting] = []
    if later_topics:
        signal_time = min((s.timestamp for s in first[0].sightings), default=None) if first else None
        later_start = StartSpec("time", signal_time - DOWNSTREAM_MARGIN_MS) if signal_time is not None else start
        plan = await make_plan(bootstrap, later_topics, start=later_start, until_ms=None, exit_at_end=True)
        later = await _scan(bootstrap, plan, signal_id, decoder)
    for step in steps:
        if step.topic != signal_topic:
            step.sightings = [s for s in later if s.topic == step.topic]
        if step.group and step.sightings:
            committed = await admin.committed_offsets(bootstrap, step.group, [step.topic])
            for sighting in step.sightings:
                sighting.committed = committed.get(_tp(sighting.topic, sighting.partition))
    dead = [s for s in later if s.topic == dlq]
    report = TraceReport(signal_id, steps, dead, "", found=any(step.sightings for step in steps) or bool(dead))
    report.where = conclusion(report)
    report.seconds = time.perf_counter() - started
    return report


async def _existing(bootstrap: str) -> set[str]:
    from phoenix95.tap.plan import existing_topics

    return await existing_topics(bootstrap)


def _tp(topic: str, partition: int) -> Any:
    from aiokafka import TopicPartition

    return TopicPartition(topic, partition)


async def _scan(bootstrap: str, plan: ReadPlan, signal_id: str, decoder: Decoder) -> list[Sighting]:
    return await asyncio.to_thread(_scan_blocking, bootstrap, plan, signal_id, decoder)


def _scan_blocking(bootstrap: str, plan: ReadPlan, signal_id: str, decoder: Decoder) -> list[Sighting]:
    """The messages of the signal between each partition's start and stop offsets."""
    open_partitions: dict[Partition, PartitionPlan] = {tp: p for tp, p in plan.partitions.items() if not p.finished}
    if not open_partitions:
        return []
    record_filter = RecordFilter(FilterSpec(signals=(signal_id,)))
    found: list[Sighting] = []
    source = open_source(bootstrap, {tp: p.start for tp, p in open_partitions.items()})
    deadline = time.monotonic() + SCAN_TIMEOUT_S
    try:
        while open_partitions and time.monotonic() < deadline:
            records = source.poll(5000, 0.2)
            for record in records:
                partition = (record[0], record[1])
                part = open_partitions.get(partition)
                if part is None or part.stop is None or record[2] >= part.stop:
                    open_partitions.pop(partition, None)
                    continue
                if record[2] + 1 >= part.stop:
                    del open_partitions[partition]
                state = record_filter.before_decode(record[4], record[5])
                if state == REJECT:
                    continue
                decoded = decoder.decode(record[6], record[5])
                if record_filter.after_decode(record, decoded, state):
                    found.append(_sighting(record, decoded))
            if not records:
                for partition, part in list(open_partitions.items()):
                    position = source.position(partition)
                    if part.stop is not None and position is not None and position >= part.stop:
                        del open_partitions[partition]
    finally:
        source.close()
    if open_partitions:
        raise TimeoutError(f"could not read {', '.join(f'{t}[{p}]' for t, p in open_partitions)} to the end")
    return sorted(found, key=lambda s: (s.timestamp, s.topic, s.partition, s.offset))


def _sighting(record: RawRecord, decoded: Decoded) -> Sighting:
    value = decoded.value if isinstance(decoded.value, dict) else None
    summary = summarize(decoded.schema, value) if value is not None else (decoded.error or "")
    return Sighting(record[0], record[1], record[2], record[3], decoded.schema, summary, value)


def summarize(schema: str | None, value: dict[str, Any]) -> str:
    """One line about a message of the signal."""
    name = (schema or "").rsplit(".v", 1)[0]
    if name == "phoenix95.Signal" or schema == "json":
        return (
            f"{value.get('action')} {value.get('symbol', value.get('ticker'))} @ {value.get('price')}"
            f" confidence {value.get('confidence')}"
        )
    if name == "phoenix95.Analysis":
        return f"score {value.get('phoenix95_score')}, final confidence {value.get('final_confidence')}"
    if name == "phoenix95.RiskVerdict":
        reasons = ", ".join(value.get("reasons") or ())
        plan = value.get("plan") or {}
        sized = f" quantity {plan.get('quantity')} notional {plan.get('notional')}" if plan else ""
        return f"{value.get('decision')}{': ' + reasons if reasons else ''}{sized}"
    if name == "phoenix95.Order":
        fill = value.get("fill") or {}
        if value.get("status") == "filled":
            return f"filled {value.get('side')} {fill.get('quantity')} @ {fill.get('price')} ({value.get('intent')})"
        return f"{value.get('status')}: {value.get('reject_reason')}"
    if name == "phoenix95.PositionEvent":
        pnl = value.get("realized_pnl") if value.get("realized_pnl") is not None else value.get("unrealized_pnl")
        return f"{value.get('kind')} -> {value.get('status')} at {value.get('price')}, pnl {pnl}"
    if name == "phoenix95.DeadLetter":
        return f"{value.get('stage')}: {value.get('reason')} {str(value.get('error'))[:120]}"
    return schema or "?"


def conclusion(report: TraceReport) -> str:
    """Where the signal is, in one sentence."""
    by_topic = {step.topic: step for step in report.steps}
    dead = report.dead_letters
    if dead:
        letter = dead[-1].value or {}
        dead_text = f"dead-lettered by {letter.get('stage')} ({letter.get('reason')}: {str(letter.get('error'))[:120]})"
    else:
        dead_text = ""
    steps = [step for step in report.steps]
    reached = [step for step in steps if step.sightings]
    if not reached:
        return dead_text or f"signal {report.signal_id} not found on any topic"
    last = reached[-1]
    name = (last.sightings[-1].schema or "").rsplit(".v", 1)[0]
    value = last.sightings[-1].value or {}
    if name == "phoenix95.PositionEvent":
        status = value.get("status")
        if status == "open":
            return f"position {value.get('position_id')} open ({len(last.sightings)} position events so far)"
        return f"position {value.get('position_id')} {status} ({value.get('close_reason') or value.get('kind')})"
    if name == "phoenix95.RiskVerdict" and value.get("decision") == "REJECTED":
        return f"rejected by risk: {', '.join(value.get('reasons') or ()) or 'no reason given'}"
    if name == "phoenix95.Order" and value.get("status") != "filled":
        return f"order rejected: {value.get('reject_reason')}"
    if dead_text:
        return dead_text
    if last.stage is not None:
        sighting = last.sightings[-1]
        if last.processed:
            return f"{last.stage} stage committed past it on {last.topic} but produced nothing further yet"
        committed = "nothing committed" if sighting.committed is None else f"committed offset {sighting.committed}"
        return (
            f"waiting for the {last.stage} stage on {last.topic}[{sighting.partition}] "
            f"at offset {sighting.offset} ({committed})"
        )
    topic = by_topic.get(last.topic)
    return f"last seen on {topic.topic if topic else last.topic}"


# -- output ---------------------------------------------------------------------------------------


def render_trace_json(report: TraceReport) -> str:
    def plain(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, bytes):
            from phoenix95.tap.output import bytes_for_json

            return bytes_for_json(value)
        return str(value)

    data = asdict(report)
    for step, original in zip(data["steps"], report.steps, strict=True):
        step["processed"] = original.processed
        for sighting, source in zip(step["sightings"], original.sightings, strict=True):
            sighting["processed"] = source.processed
    return json.dumps(data, default=plain, separators=(",", ":"))


def render_trace_pretty(report: TraceReport, *, color: bool, width: int = 160) -> str:
    import io

    from rich.console import Console
    from rich.table import Table

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=color, no_color=not color, width=width, highlight=False)
    table = Table(title=f"signal {report.signal_id}", title_justify="left", show_lines=False)
    for column in ("topic", "partition@offset", "time", "message", "consumer", "committed past it?"):
        table.add_column(column, overflow="fold")
    for step in report.steps:
        if not step.sightings:
            table.add_row(step.topic, "-", "", "[dim]nothing[/dim]", step.stage or "", "")
            continue
        shown = step.sightings if len(step.sightings) <= 3 else [step.sightings[0], step.sightings[-1]]
        for index, sighting in enumerate(shown):
            label = step.topic if index == 0 else ""
            if len(step.sightings) > 3 and index == 1:
                label = f"  ({len(step.sightings) - 2} more) last"
            table.add_row(
                label,
                f"{sighting.partition}@{sighting.offset}",
                format_ms(sighting.timestamp),
                sighting.summary,
                step.stage or "",
                _committed_text(step, sighting),
            )
    for letter in report.dead_letters:
        table.add_row(
            letter.topic,
            f"{letter.partition}@{letter.offset}",
            format_ms(letter.timestamp),
            f"[red]{letter.summary}[/red]",
            "",
            "",
        )
    console.print(table)
    console.print(f"[bold]where:[/bold] {report.where}")
    console.print(f"[dim]traced in {report.seconds:.2f}s[/dim]")
    return buffer.getvalue()


def _committed_text(step: Step, sighting: Sighting) -> str:
    if step.stage is None:
        return "[dim](final topic)[/dim]"
    if sighting.committed is None:
        return "[yellow]no commit yet[/yellow]"
    if sighting.processed:
        return f"[green]yes[/green] (committed {sighting.committed})"
    return f"[yellow]no[/yellow] (committed {sighting.committed})"
