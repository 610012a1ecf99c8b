"""The notifications stage: pipeline events -> rows of the `notifications` outbox (one per event and
channel), written in the transaction that acknowledges the events; the sender delivers them.

Shaped like every stage (agents/base.py): decode -> decide -> write -> ack, the offsets committed only
after the rows are written. A re-delivered event makes the same rows (keyed by event id and channel),
so nothing is sent twice; the sender is a background task, so a slow channel never holds the consume
loop. Dead letters are held and summarised per stage and reason once their window closes (their
records are acknowledged with the summary's row). Pipeline health (consumer-group lag status ERR, a
worker's heartbeat key expiring in Redis, and the recoveries) is checked on the stage's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from phoenix95.agents.base import Stage, dead_letter
from phoenix95.agents.ports import DeadLettered, InputRecord, Outcome
from phoenix95.domain import ids
from phoenix95.notify import events as ev
from phoenix95.notify.channels import Router
from phoenix95.notify.store import HANDOVER, NOTIFICATION, Handover, NotificationStore, row_write, state_write
from phoenix95.schemas import topics
from phoenix95.schemas.codec import Codec, DecodeError, Reason
from phoenix95.schemas.messages import ControlEvent, DeadLetter, Order, PositionEvent, RiskVerdict
from phoenix95.storage.postgres import Database, PgWrite
from phoenix95.streams.stages import NOTIFICATIONS

logger = logging.getLogger(__name__)

#: The fields the stage decides from before decoding a whole message (`Codec.peek`).
_POSITION_FIELDS = ("position_id", "kind", "risk_level")
_VERDICT_FIELDS = ("decision",)
_ORDER_FIELDS = ("status",)
#: Position event kinds always decoded (opens and closes are notified; the rest only on a risk change).
_POSITION_KINDS_ALWAYS = frozenset({"opened", *ev.CLOSING_KINDS})
#: Where position events come from: the stage reads the lifecycle topic (the ticks that open, close or
#: change a position's risk level), decoding each; the same decisions hold for the whole tick stream,
#: where most ticks are told apart by a peek and skipped.

#: Sent rows deleted per clock tick at most (a short statement: the tick holds the consume loop).
PURGE_BATCH = 5000

_CLOCK = InputRecord(topic="(clock)", partition=-1, offset=-1, timestamp=None, key=None, value=b"")


@dataclass
class NotifyOutcome(Outcome):
    """An outcome with the outbox rows and state it writes (through `NotificationSink`)."""

    writes: list[PgWrite] = field(default_factory=list)


class NotificationSink:
    """The `Sink` of the notifications stage: its outbox rows and state, and dead letters, in one
    transaction per batch; then it hands the new rows to the sender of this worker.

    With a running sender, rows are inserted leased to it for `lease_s`, and the ones the insert
    made (not those of a re-delivered event, there already) go to it in memory once the transaction
    committed: a row is written twice (inserted, marked sent) instead of three times (and claimed).
    The lease keeps another worker's sender off them; a killed worker's rows are taken back from the
    table once it ran out."""

    def __init__(
        self,
        database: Database,
        on_written: Callable[[], None] | None = None,
        *,
        sender: Any = None,
    ):
        self.database = database
        self.on_written = on_written
        #: Takes the new rows (`hand_over`) while it runs (`lease_s` > 0): `notify.sender.Sender`.
        self.sender = sender

    async def persist(self, stage: str, outcomes: Sequence[Outcome]) -> list[tuple[int, Exception]]:
        from phoenix95.storage.tables import writes_for

        groups: list[list[PgWrite]] = []
        for outcome in outcomes:
            group = list(outcome.writes) if isinstance(outcome, NotifyOutcome) else []
            if outcome.dead_letter is not None:
                group.extend(writes_for(DeadLettered(outcome.dead_letter)))
            groups.append(group)
        lease_s = self.sender.lease_s if self.sender is not None else 0.0
        handover = Handover(lease_s) if lease_s > 0 else None
        token = HANDOVER.set(handover)
        try:
            failures = await self.database.write(groups)
        finally:
            HANDOVER.reset(token)
        if handover is not None and handover.rows:
            for index, _ in failures:  # an isolated group that failed: its rows are not in the table
                for write in groups[index]:
                    if write.statement is NOTIFICATION:
                        handover.rows.pop(write.params[0], None)
            self.sender.hand_over(list(handover.rows.values()))
        if self.on_written is not None and any(groups):
            self.on_written()
        return failures


def _text(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _as_fields(message: Any) -> Mapping[str, Any]:
    """A message's fields: a record read without validation (`Codec.read`) or a decoded model."""
    return message if isinstance(message, Mapping) else message.__dict__


def position_payload(event: PositionEvent | Mapping[str, Any]) -> dict[str, Any]:
    values = _as_fields(event)
    fields = [
        "position_id",
        "order_id",
        "signal_id",
        "symbol",
        "side",
        "kind",
        "status",
        "quantity",
        "leverage",
        "margin_mode",
        "entry_price",
        "price",
        "mark_price",
        "margin",
        "stop_loss_price",
        "take_profit_price",
        "liquidation_price",
        "unrealized_pnl",
        "roe",
        "margin_ratio",
        "distance_to_liquidation",
        "risk_level",
        "realized_pnl",
        "exit_price",
        "close_reason",
        "opened_at",
        "closed_at",
    ]
    return {name: _text(values.get(name)) for name in fields}


def verdict_payload(verdict: RiskVerdict | Mapping[str, Any]) -> dict[str, Any]:
    values = _as_fields(verdict)
    payload: dict[str, Any] = {
        "verdict_id": values["verdict_id"],
        "signal_id": values["signal_id"],
        "symbol": values["symbol"],
        "side": values["side"],
        "decision": values["decision"],
        "intent": values["intent"],
        "price": _text(values["price"]),
        "final_confidence": _text(values["final_confidence"]),
        "reasons": list(values["reasons"]),
        "trading_state": values["trading_state"],
        "position_id": values["close_position_id"],
    }
    if values.get("plan") is not None:
        plan = _as_fields(values["plan"])
        payload.update(
            quantity=_text(plan["quantity"]),
            leverage=plan["leverage"],
            stop_loss_price=_text(plan["stop_loss_price"]),
            take_profit_price=_text(plan["take_profit_price"]),
            liquidation_price=_text(plan["liquidation_price"]),
        )
    return payload


def order_payload(order: Order) -> dict[str, Any]:
    return {
        "order_id": order.order_id,
        "signal_id": order.signal_id,
        "symbol": order.symbol,
        "side": order.position_side,
        "intent": order.intent,
        "status": order.status,
        "quantity": _text(order.quantity),
        "requested_price": _text(order.requested_price),
        "reject_reason": order.reject_reason,
        "close_position_id": order.close_position_id,
        "position_id": order.close_position_id,
    }


def control_payload(event: ControlEvent) -> dict[str, Any]:
    return {
        "kind": event.kind,
        "severity": event.severity,
        "actor": event.actor,
        "subject": event.subject,
        "state": event.state,
        "reason": event.reason,
        "message": event.message,
        "details": event.details,
    }


@dataclass
class _DeadLetterWindow:
    stage: str
    reason: str
    opened: float
    records: list[InputRecord] = field(default_factory=list)
    topics: set[str] = field(default_factory=set)
    example: str = ""


class HealthWatch:
    """The pipeline's health as the notifications stage sees it: each stage's consumer-group status
    (sampled in the background) and its heartbeat key in Redis (`s4:metrics:{stage}`, 15 s TTL)."""

    def __init__(self, settings: Any, stages: Sequence[str]):
        self.settings = settings
        self.stages = tuple(stages)
        self.statuses: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._monitor: Any = None
        self._redis: Any = None

    async def start(self) -> None:
        if self._task is not None:
            return
        from phoenix95.monitoring.monitor import LagMonitor, pipeline_targets
        from phoenix95.monitoring.offsets import OffsetReader
        from phoenix95.storage.redis_state import RedisState

        settings = self.settings
        self._redis = RedisState.from_url(settings.redis_url(), prefix=settings.redis.prefix)
        self._monitor = LagMonitor(
            OffsetReader(settings.kafka.bootstrap_servers), pipeline_targets(settings.namespace, self.stages)
        )
        self._task = asyncio.create_task(self._run(), name="p95-notify-health")

    async def _run(self) -> None:
        assert self._monitor is not None
        try:
            await self._monitor.reader.start()
            await self._monitor.run(self.settings.notify.health_interval_s / 2, on_snapshot=self._remember)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            logger.warning("notifications: lag sampling stopped: %s", error)

    def _remember(self, snapshot: Any) -> None:
        for group in snapshot.groups:
            if group.stage:
                self.statuses[group.stage] = str(group.status)

    async def heartbeats(self) -> dict[str, bool]:
        if self._redis is None:
            return {}
        alive = {}
        for stage in self.stages:
            alive[stage] = bool(await self._redis.client.exists(self._redis.keys.metrics(stage)))
        return alive

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._monitor is not None:
            with contextlib.suppress(Exception):
                await self._monitor.reader.stop()
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.close()
            self._redis = None


class NotificationStage(Stage):
    name = NOTIFICATIONS.name
    inputs = NOTIFICATIONS.inputs
    #: Writes through its own sink (outbox rows and state), not the pipeline's StoreSink.
    own_sink: NotificationSink | None = None

    def __init__(
        self,
        codec: Codec,
        router: Router,
        store: NotificationStore,
        *,
        sender: Any = None,
        health: HealthWatch | None = None,
        dlq_window_s: float = 30.0,
        health_interval_s: float = 5.0,
        retention_days: float | None = None,
        retention_interval_s: float = 3600.0,
        topic_names: topics.Topics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.codec = codec
        self.router = router
        self.store = store
        self.sender = sender
        self.health = health
        self.dlq_window_s = dlq_window_s
        self.health_interval_s = health_interval_s
        self.retention_days = retention_days
        self.retention_interval_s = retention_interval_s
        self.topic_names = topic_names or topics.Topics()
        self.clock = clock
        #: Remembered between events (and in `notification_state`): risk level notified per position,
        #: health per check.
        self.state: dict[str, str] = {}
        self.windows: dict[tuple[str, str], _DeadLetterWindow] = {}
        self._health_checked = 0.0
        #: When the outbox was last purged (None: not yet; the first clock tick does it).
        self._purged: float | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self.state = await self.store.load_state()
        if self.sender is not None:
            self.sender.start()
        if self.health is not None:
            await self.health.start()

    async def stop(self) -> None:
        if self.health is not None:
            await self.health.stop()
        if self.sender is not None:
            await self.sender.stop()

    def reset(self) -> None:
        """Partitions were revoked: the held dead letters will be re-delivered to the new owner."""
        self.state.clear()
        self.windows.clear()

    async def recover(self) -> None:
        """After a failed write: reload the remembered state; the held dead letters stay held."""
        self.state = await self.store.load_state()

    # -- events --------------------------------------------------------------------------------

    def _base(self, record: InputRecord) -> str:
        return self.topic_names.base(record.topic)

    async def process(self, records: Sequence[InputRecord]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for record in records:
            base = self._base(record)
            if base == topics.DLQ:
                self._hold_dead_letter(record)
                continue
            try:
                outcomes.append(self._decide(base, record))
            except DecodeError as error:
                outcomes.append(
                    Outcome(record, dead_letter=dead_letter(self.name, record, error.reason, error.message))
                )
        return outcomes

    def _decide(self, base: str, record: InputRecord) -> Outcome:
        """Most records notify nothing (a position tick whose risk level stays, a filled order, a verdict
        of a type that is off): those are told apart from a few fields read off the front of the
        message (`Codec.peek`) and finished without a full decode; the others are decoded and drafted."""
        writes: list[PgWrite] = []
        if base == topics.POSITION_LIFECYCLE:
            # opens, closes and risk-level changes only: nearly all notify, so a peek first would be
            # read twice (`_position` leaves an event at the known level without a row, as below).
            # Read, not validated: the fields are only copied into text (the positions stage that
            # wrote them validated them), and validation cost as much as the read.
            self._position(self.codec.read(record.value, PositionEvent), writes)
        elif base == topics.POSITION_TICKS:
            head = self.codec.peek(record.value, PositionEvent, _POSITION_FIELDS)
            if head["kind"] not in _POSITION_KINDS_ALWAYS:
                key = f"risk:{head['position_id']}"
                notify, level = ev.escalation(self.state.get(key), head["risk_level"])
                if not notify and level == self.state.get(key):
                    return NotifyOutcome(record)  # a tick at the level already known: nothing to do
            self._position(self.codec.read(record.value, PositionEvent), writes)
        elif base == topics.RISK_VERDICTS:
            head = self.codec.peek(record.value, RiskVerdict, _VERDICT_FIELDS)
            kind = ev.VERDICT_APPROVED if head["decision"] == "APPROVED" else ev.VERDICT_REJECTED
            if not self.router.wanted(kind):
                return NotifyOutcome(record)
            verdict = self.codec.read(record.value, RiskVerdict)
            self._draft(
                ev.Draft(
                    verdict["event_id"],
                    kind,
                    "info",
                    verdict_payload(verdict),
                    event_time=verdict["ts_event"],
                    position_id=verdict["close_position_id"],
                    signal_id=verdict["signal_id"],
                    subject=verdict["symbol"],
                ),
                writes,
            )
        elif base == topics.ORDERS:
            head = self.codec.peek(record.value, Order, _ORDER_FIELDS)
            if head["status"] == "filled" or not self.router.wanted(ev.ORDER_REJECTED):
                return NotifyOutcome(record)
            order = self.codec.decode(record.value, Order)
            self._draft(
                ev.Draft(
                    order.event_id,
                    ev.ORDER_REJECTED,
                    "warning",
                    order_payload(order),
                    event_time=order.ts_event,
                    position_id=order.close_position_id,
                    signal_id=order.signal_id,
                    subject=order.symbol,
                ),
                writes,
            )
        elif base == topics.CONTROL_EVENTS:
            control = self.codec.decode(record.value, ControlEvent)
            if control.kind == "worker" and control.subject:
                # remembered so a heartbeat that then expires is reported as announced
                self._remember(f"announced:{control.subject}", control.state or "", writes)
            self._draft(
                ev.Draft(
                    control.event_id,
                    ev.CONTROL_TYPES.get(control.kind, ev.HEALTH),
                    control.severity,
                    control_payload(control),
                    event_time=control.ts_event,
                    subject=control.subject,
                ),
                writes,
            )
        return NotifyOutcome(record, writes=writes)

    def _position(self, event: Mapping[str, Any], writes: list[PgWrite]) -> None:
        payload = position_payload(event)
        key = f"risk:{event['position_id']}"
        common: dict[str, Any] = {
            "event_time": event["ts_event"],
            "position_id": event["position_id"],
            "signal_id": event["signal_id"],
            "subject": event["symbol"],
        }
        if event["kind"] == "opened":
            self._draft(ev.Draft(event["event_id"], ev.POSITION_OPENED, "info", payload, **common), writes)
            # The opening level is the baseline (a 20x position opens CRITICAL: <5 % to liquidation, and
            # its open message says so); only a rise above it, or back after re-arming, is an escalation.
            _, baseline = ev.escalation(None, event["risk_level"])
            if baseline is not None:
                self._remember(key, baseline, writes)
            return
        if event["kind"] in ev.CLOSING_KINDS:
            reason = event["close_reason"] or {"liquidated": "liquidation", "expired": "expiry"}.get(event["kind"])
            payload["close_reason"] = reason
            self._draft(
                ev.Draft(event["event_id"], ev.POSITION_CLOSED, ev.close_severity(reason), payload, **common), writes
            )
            if key in self.state:
                self._remember(key, "", writes)
            return
        notify, level = ev.escalation(self.state.get(key), event["risk_level"])
        if level != self.state.get(key):
            self._remember(key, level or "", writes)
        if notify:
            severity: ev.Severity = "critical" if event["risk_level"] == "CRITICAL" else "warning"
            self._draft(ev.Draft(event["event_id"], ev.RISK_ESCALATION, severity, payload, **common), writes)

    def _remember(self, key: str, value: str, writes: list[PgWrite]) -> None:
        if value:
            self.state[key] = value
        else:
            self.state.pop(key, None)
        writes.append(state_write(key, value))

    def _draft(self, draft: ev.Draft, writes: list[PgWrite]) -> None:
        mode = self.router.mode(draft.type)
        if mode == "off":
            return
        for channel in self.router.route(draft.type, draft.severity):
            writes.append(row_write(draft, channel.name, silent=mode == "silent"))

    # -- dead letters --------------------------------------------------------------------------

    def _hold_dead_letter(self, record: InputRecord) -> None:
        try:
            letter = self.codec.decode(record.value, DeadLetter)
            stage, reason, error = letter.stage, letter.reason, letter.error
            source = self.topic_names.base(letter.source_topic)
        except DecodeError as decode_error:  # never dead-letter a dead letter (it would loop)
            stage, reason, error, source = "unknown", str(Reason.PROCESSING_ERROR), decode_error.message, record.topic
        window = self.windows.get((stage, reason))
        if window is None:
            window = self.windows[(stage, reason)] = _DeadLetterWindow(stage, reason, self.clock())
            window.example = error.splitlines()[0][:200] if error else ""
        window.records.append(record)
        window.topics.add(source)

    def _close_windows(self, now: float, *, force: bool = False) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for key, window in list(self.windows.items()):
            if not force and now - window.opened < self.dlq_window_s:
                continue
            del self.windows[key]
            first = window.records[0]
            draft = ev.Draft(
                ids.derive(
                    "dead-letter-summary", window.stage, window.reason, first.topic, first.partition, first.offset
                ),
                ev.DEAD_LETTERS,
                "warning",
                {
                    "stage": window.stage,
                    "reason": window.reason,
                    "count": len(window.records),
                    "topics": sorted(window.topics),
                    "window_s": self.dlq_window_s,
                    "example": window.example,
                },
                event_time=first.timestamp,
                subject=window.stage,
            )
            writes: list[PgWrite] = []
            self._draft(draft, writes)
            outcomes.append(NotifyOutcome(first, writes=writes))
            outcomes.extend(Outcome(record) for record in window.records[1:])
        return outcomes

    # -- the clock -----------------------------------------------------------------------------

    async def on_clock(self, now: datetime) -> list[Outcome]:
        outcomes = self._close_windows(self.clock())
        await self._purge()
        if self.health is not None and self.clock() - self._health_checked >= self.health_interval_s:
            self._health_checked = self.clock()
            writes: list[PgWrite] = []
            try:
                await self._check_health(now, writes)
            except Exception as error:
                logger.warning("notifications: health check failed: %s", error)
            if writes:
                outcomes.append(NotifyOutcome(_CLOCK, writes=writes))
        return outcomes

    async def _purge(self) -> None:
        """Outbox retention: sent rows older than `retention_days` go, a batch per clock tick until
        none is left, then again after `retention_interval_s`."""
        if self.retention_days is None:
            return
        if self._purged is not None and self.clock() - self._purged < self.retention_interval_s:
            return
        try:
            deleted = await self.store.purge_sent(self.retention_days, limit=PURGE_BATCH)
        except Exception as error:
            logger.warning("notifications: purging sent rows failed: %s", error)
            deleted = 0
        if deleted:
            logger.info("notifications: deleted %d sent rows older than %g days", deleted, self.retention_days)
        if deleted < PURGE_BATCH:
            self._purged = self.clock()

    async def _check_health(self, now: datetime, writes: list[PgWrite]) -> None:
        assert self.health is not None
        alive = await self.health.heartbeats()
        for stage, up in alive.items():
            key = f"health:heartbeat:{stage}"
            before = self.state.get(key)
            state = "up" if up else "down"
            if before is None and not up:
                continue  # never seen: not started yet, or not part of this deployment
            if before == state:
                continue
            self._remember(key, state, writes)
            if before is None:
                continue
            announced = self.state.get(f"announced:{stage}") == "stopping"
            if up:
                message = f"Worker {stage} is sending metrics again."
                severity: ev.Severity = "info"
                if announced:
                    self._remember(f"announced:{stage}", "", writes)
            elif announced:
                message = f"Worker {stage} stopped as announced (no heartbeat since it said it was stopping)."
                severity = "warning"
            else:
                message = f"Worker {stage} stopped sending metrics: no heartbeat in Redis (it died or hangs)."
                severity = "critical"
            self._health_draft("heartbeat", stage, "recovered" if up else "missing", severity, message, now, writes)
        for stage, status in dict(self.health.statuses).items():
            key = f"health:lag:{stage}"
            before = self.state.get(key, "OK")
            state = "ERR" if status == "ERR" else "OK"
            if before == state:
                continue
            self._remember(key, state, writes)
            if state == "ERR":
                message = f"Consumer group of {stage} is ERR: its committed offsets stopped moving while messages wait."
                self._health_draft("lag", stage, "ERR", "critical", message, now, writes)
            else:
                self._health_draft(
                    "lag", stage, "recovered", "info", f"{stage} is consuming again (lag OK).", now, writes
                )

    def _health_draft(
        self,
        check: str,
        stage: str,
        state: str,
        severity: ev.Severity,
        message: str,
        now: datetime,
        writes: list[PgWrite],
    ) -> None:
        draft = ev.Draft(
            ids.derive("health", check, stage, state, now.isoformat()),
            ev.HEALTH,
            severity,
            {"check": check, "subject": stage, "state": state, "message": message, "at": now.isoformat()},
            event_time=now,
            subject=stage,
        )
        logger.warning("notifications: %s", message)
        self._draft(draft, writes)


def payload_json(payload: dict[str, Any]) -> str:
    return json.dumps(payload, default=str, sort_keys=True)
