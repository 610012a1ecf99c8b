"""The notifications stage's decisions (no I/O): rows per event and channel, deterministic so a
re-delivery writes nothing new; modes; risk escalation from the opening level with hysteresis;
dead letters held and summarised per stage and reason; a template error fails only its row."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any

from phoenix95.agents.base import dead_letter
from phoenix95.agents.ports import InputRecord
from phoenix95.notify import events as ev
from phoenix95.notify.channels import Router, build_channels
from phoenix95.notify.sender import ChannelSender, NotifyMetrics
from phoenix95.notify.stage import NotificationStage, NotifyOutcome
from phoenix95.notify.store import NOTIFICATION, STATE, Row
from phoenix95.schemas import topics
from phoenix95.schemas.codec import Codec
from phoenix95.settings import NotifySettings
from tests import factories
from tests import notify_samples as s
from tests.notify_samples import http_stub

SETTINGS = NotifySettings.model_validate(
    {"urls": [{"url": "json://127.0.0.1:9/a", "name": "a"}, {"url": "json://127.0.0.1:9/b", "name": "b"}]}
)


class MemoryStore:
    def __init__(self) -> None:
        self.failed: list[tuple[str, str]] = []
        self.sent_ids: list[str] = []

    async def load_state(self) -> dict[str, str]:
        return {}

    async def fail_now(self, notification_id: str, error: str) -> None:
        self.failed.append((notification_id, error))

    async def sent(self, notification_ids: Any, *, digest_id: str | None = None) -> None:
        self.sent_ids.extend(notification_ids)

    async def part_sent(self, notification_id: str, parts: int) -> None:
        pass


def _stage() -> NotificationStage:
    stage = NotificationStage(Codec(), Router(SETTINGS, build_channels(SETTINGS)), MemoryStore(), dlq_window_s=30)  # type: ignore[arg-type]
    asyncio.run(stage.start())
    return stage


_offsets = iter(range(10_000))


def _record(base: str, event: Any) -> InputRecord:
    return InputRecord(base, 0, next(_offsets), None, None, Codec().encode(event))


def _rows(stage: NotificationStage, base: str, event: Any) -> list[tuple]:
    (outcome,) = asyncio.run(stage.process([_record(base, event)]))
    assert isinstance(outcome, NotifyOutcome)
    return [w.params for w in outcome.writes if w.statement is NOTIFICATION]


def test_an_event_makes_one_row_per_channel_and_a_redelivery_the_same_rows() -> None:
    stage = _stage()
    opened = factories.position_event("opened")
    first = _rows(stage, topics.POSITION_TICKS, opened)
    assert sorted(row[2] for row in first) == ["a", "b"] and {row[3] for row in first} == {ev.POSITION_OPENED}
    assert _rows(_stage(), topics.POSITION_TICKS, opened) == first  # same ids: ON CONFLICT DO NOTHING
    closed = factories.position_event("closed", close_reason="take_profit")
    (row, _) = _rows(stage, topics.POSITION_TICKS, closed)
    assert row[3] == ev.POSITION_CLOSED and '"close_reason":"take_profit"' in row[9]


def test_risk_escalates_from_the_opening_level_with_hysteresis() -> None:
    stage = _stage()
    at = iter(datetime(2026, 1, 1, 0, minute, tzinfo=UTC) for minute in range(60))
    _rows(stage, topics.POSITION_TICKS, factories.position_event("opened", risk_level="HIGH", at=next(at)))
    notified = []
    for level in ["HIGH", "MEDIUM", "HIGH", "CRITICAL", "HIGH", "CRITICAL", "LOW", "HIGH"]:
        rows = _rows(stage, topics.POSITION_TICKS, factories.position_event("tick", risk_level=level, at=next(at)))
        if rows:
            notified.append(level)
    assert notified == ["CRITICAL", "HIGH"]  # opened at HIGH: no escalation until CRITICAL; re-armed by LOW
    (outcome,) = asyncio.run(
        stage.process([_record(topics.POSITION_TICKS, factories.position_event("closed", at=next(at)))])
    )
    assert [w.params for w in outcome.writes if w.statement is STATE] == [
        ("risk:5f0c7a4e-1d2b-5c3d-9e8f-0a1b2c3d4e5f", "")
    ]  # forgotten with the position


class CountingCodec(Codec):
    """A codec that counts the messages it decodes whole."""

    def __init__(self) -> None:
        super().__init__()
        self.decoded = 0

    def decode(self, data: bytes, model: Any, **kwargs: Any) -> Any:
        self.decoded += 1
        return super().decode(data, model, **kwargs)

    def read(self, data: bytes, model: Any) -> Any:
        self.decoded += 1
        return super().read(data, model)


def test_ticks_at_a_known_risk_level_and_events_of_types_that_are_off_are_not_decoded() -> None:
    codec = CountingCodec()
    stage = NotificationStage(codec, Router(SETTINGS, build_channels(SETTINGS)), MemoryStore(), dlq_window_s=30)  # type: ignore[arg-type]
    asyncio.run(stage.start())
    at = iter(datetime(2026, 1, 1, 0, minute, tzinfo=UTC) for minute in range(60))
    levels = ["LOW", "MEDIUM", "LOW", "MEDIUM", "CRITICAL", "CRITICAL", "HIGH", "CRITICAL"]
    events = [
        factories.position_event("opened", at=next(at)),
        *(factories.position_event("tick", risk_level=level, at=next(at)) for level in levels),
        factories.position_event("closed", close_reason="stop_loss", at=next(at)),
    ]
    outcomes = asyncio.run(stage.process([_record(topics.POSITION_TICKS, e) for e in events]))
    assert len(outcomes) == len(events)  # every record finished (acked), decoded or not
    types = [row[3] for o in outcomes for row in (w.params for w in o.writes if w.statement is NOTIFICATION)]
    assert types == [ev.POSITION_OPENED] * 2 + [ev.RISK_ESCALATION] * 2 + [ev.POSITION_CLOSED] * 2
    assert codec.decoded == 3  # the open, the first CRITICAL tick, the close

    off = NotifySettings.model_validate({**SETTINGS.model_dump(mode="json"), "types": {"position_opened": "off"}})
    assert Router(off, build_channels(SETTINGS)).wanted(ev.POSITION_OPENED) is False
    assert Router(off, build_channels(SETTINGS)).wanted(ev.POSITION_CLOSED) is True


def test_codec_peek_reads_the_front_of_a_message_and_refuses_another_schema() -> None:
    import pytest

    from phoenix95.schemas.codec import DecodeError
    from phoenix95.schemas.messages import PositionEvent, RiskVerdict

    data = Codec().encode(factories.position_event("tick", risk_level="HIGH"))
    head = Codec().peek(data, PositionEvent, ("position_id", "kind", "risk_level"))
    assert (head["kind"], head["risk_level"]) == ("tick", "HIGH")
    assert head["position_id"] == "5f0c7a4e-1d2b-5c3d-9e8f-0a1b2c3d4e5f"
    with pytest.raises(DecodeError):
        Codec().peek(data, RiskVerdict, ("decision",))
    with pytest.raises(DecodeError):
        Codec().peek(data[:30], PositionEvent, ("risk_level",))


def test_modes_approved_silent_rejected_off() -> None:
    from phoenix95.schemas.messages import RiskVerdict

    stage = _stage()
    verdict = factories.signal()  # a source of ids
    base = {
        "event_id": factories.ids.derive("v", verdict.signal_id),
        "correlation_id": verdict.signal_id,
        "ts_event": verdict.ts_event,
        "ts_ingest": verdict.ts_event,
        "schema_version": 1,
        "producer": "tests",
        "verdict_id": factories.ids.derive("verdict", verdict.signal_id),
        "signal_id": verdict.signal_id,
        "analysis_id": factories.ids.derive("analysis", verdict.signal_id),
        "symbol": "XRPUSDT",
        "side": "long",
        "trading_state": "ACTIVE",
        "signal_time": verdict.ts_event,
        "price": "1.19",
        "confidence": "0.9",
        "phoenix95_score": "0.9",
        "final_confidence": "0.8",
    }
    approved = _rows(stage, topics.RISK_VERDICTS, RiskVerdict.model_validate({**base, "decision": "APPROVED"}))
    assert len(approved) == 2 and all(row[5] is True for row in approved)  # silent
    rejected = RiskVerdict.model_validate({**base, "decision": "REJECTED", "event_id": factories.ids.derive("r")})
    assert _rows(stage, topics.RISK_VERDICTS, rejected) == []


def test_dead_letters_are_held_and_summarised_per_stage_and_reason() -> None:
    now = [0.0]
    stage = _stage()
    stage.clock = lambda: now[0]
    bad = [InputRecord("p95.signals", 0, i, None, None, b"{") for i in range(5)]
    letters = [dead_letter("analysis", record, "DECODE_ERROR", "invalid JSON") for record in bad]
    letters.append(dead_letter("risk", bad[0], "VALIDATION_ERROR", "side"))
    records = [_record(topics.DLQ, letter) for letter in letters]
    assert asyncio.run(stage.process(records)) == []  # held until the window closes
    assert asyncio.run(stage.on_clock(datetime.now(UTC))) == []
    now[0] = 31.0
    outcomes = asyncio.run(stage.on_clock(datetime.now(UTC)))
    assert sorted(o.record.offset for o in outcomes) == sorted(r.offset for r in records)  # all acked
    summaries = [
        w.params for o in outcomes if isinstance(o, NotifyOutcome) for w in o.writes if w.statement is NOTIFICATION
    ]
    assert len(summaries) == 4  # (analysis, DECODE_ERROR) and (risk, VALIDATION_ERROR), two channels each
    assert {'"count":5' in row[9] for row in summaries} == {True, False}


def test_a_template_error_fails_its_row_and_the_others_are_sent() -> None:
    store = MemoryStore()
    (channel,) = build_channels(NotifySettings.model_validate({"urls": ["json://127.0.0.1:9/x"]}))
    sender = ChannelSender(
        channel,
        store,  # type: ignore[arg-type]
        NotifyMetrics(),
        max_attempts=3,
        backoff_base_s=1,
        backoff_max_s=2,
        lease_s=5,
        poll_s=0.1,
        timeout_s=1,
    )

    def row(notification_id: str, payload: dict) -> Row:
        return Row(
            notification_id,
            notification_id,
            "x",
            ev.POSITION_OPENED,
            "info",
            False,
            None,
            None,
            payload,
            0,
            0,
            datetime.now(UTC),
        )

    async def run() -> None:
        with http_stub() as sent:
            assert await sender.send_alone(row("bad", {**s.OPENED, "quantity": None}))
            assert await sender.send_alone(row("good", s.OPENED))
        assert len(sent) == 1

    asyncio.run(run())
    assert store.failed == [("bad", "template: missing quantity")] and store.sent_ids == ["good"]
    assert (
        sender.metrics.total.labels(
            "json-" + channel.name.split("-")[1], ev.POSITION_OPENED, "template_error"
        )._value.get()
        == 1
    )


class FakeHealth:
    def __init__(self) -> None:
        self.alive = {"risk": True, "positions": False}
        self.statuses: dict[str, str] = {"execution": "OK"}

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def heartbeats(self) -> dict[str, bool]:
        return dict(self.alive)


def _health_titles(stage: NotificationStage, now: list[float]) -> list[str]:
    now[0] += 10
    outcomes = asyncio.run(stage.on_clock(datetime.now(UTC)))
    rows = [w.params for o in outcomes if isinstance(o, NotifyOutcome) for w in o.writes if w.statement is NOTIFICATION]
    return sorted({row[9] for row in rows if row[2] == "a"})


def test_a_vanished_heartbeat_and_an_err_lag_are_noticed_and_so_are_the_recoveries() -> None:
    now = [0.0]
    health = FakeHealth()
    stage = NotificationStage(
        Codec(),
        Router(SETTINGS, build_channels(SETTINGS)),
        MemoryStore(),  # type: ignore[arg-type]
        health=health,  # type: ignore[arg-type]
        clock=lambda: now[0],
    )
    asyncio.run(stage.start())
    assert _health_titles(stage, now) == []  # risk seen alive; positions never seen: not reported
    health.alive["risk"] = False
    health.statuses["execution"] = "ERR"
    (heartbeat, lag) = _health_titles(stage, now)  # sorted: '"check":"heartbeat"' < '"check":"lag"'
    assert '"check":"heartbeat"' in heartbeat and '"state":"missing"' in heartbeat and "(it died or hangs)" in heartbeat
    assert '"check":"lag"' in lag and '"state":"ERR"' in lag
    assert _health_titles(stage, now) == []  # no repeat while it lasts
    health.alive["risk"] = True
    health.statuses["execution"] = "OK"
    recovered = _health_titles(stage, now)
    assert len(recovered) == 2 and all('"state":"recovered"' in row for row in recovered)


def test_an_announced_stop_is_a_warning_not_a_crash() -> None:
    from phoenix95.notify.heartbeat import worker_event

    now = [0.0]
    health = FakeHealth()
    stage = NotificationStage(
        Codec(),
        Router(SETTINGS, build_channels(SETTINGS)),
        MemoryStore(),  # type: ignore[arg-type]
        health=health,  # type: ignore[arg-type]
        clock=lambda: now[0],
    )
    asyncio.run(stage.start())
    _health_titles(stage, now)
    stopping = _rows(stage, topics.CONTROL_EVENTS, worker_event("risk", "stopping", "warning"))
    assert stopping and stopping[0][3] == ev.WORKER and stopping[0][4] == "warning"
    health.alive["risk"] = False
    (row,) = _health_titles(stage, now)
    assert "stopped as announced" in row


def test_a_wake_up_that_comes_while_the_sender_claims_is_not_lost() -> None:
    """A write that wakes the sender while it is claiming (too early for its rows to be seen) makes
    the next round start at once, not a poll interval later."""
    (channel,) = build_channels(NotifySettings.model_validate({"urls": ["json://127.0.0.1:9/x"]}))
    sender = ChannelSender(
        channel,
        MemoryStore(),  # type: ignore[arg-type]
        NotifyMetrics(),
        max_attempts=3,
        backoff_base_s=1,
        backoff_max_s=2,
        lease_s=5,
        poll_s=30,
        timeout_s=1,
    )
    rounds: list[float] = []

    async def round_() -> bool:
        rounds.append(asyncio.get_running_loop().time())
        if len(rounds) == 1:
            sender.wake.set()  # the stage wrote rows while this claim was on its way
        return False

    sender.round = round_  # type: ignore[method-assign]

    async def scenario() -> None:
        task = asyncio.create_task(sender.run())
        try:
            for _ in range(100):
                if len(rounds) >= 2:
                    break
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(scenario())
    assert len(rounds) >= 2 and rounds[1] - rounds[0] < 1.0


def test_a_message_read_without_validation_gives_the_payload_its_decoded_model_gives() -> None:
    """The hub reads position events and verdicts without the model's validation (`Codec.read`): the
    payloads the templates render from are the same as from the validated models."""
    from decimal import Decimal, InvalidOperation

    from phoenix95.notify import templates
    from phoenix95.notify.stage import position_payload, verdict_payload
    from phoenix95.schemas.messages import PositionEvent, RiskVerdict

    def same(read: dict[str, Any], decoded: dict[str, Any]) -> bool:
        """Equal field by field; a number may be spelled otherwise (the Avro string as written,
        "0.00000000", against the Decimal's "0E-8"), never differ in value."""
        assert read.keys() == decoded.keys()
        for key, value in read.items():
            try:
                equal = Decimal(value) == Decimal(decoded[key])
            except (InvalidOperation, TypeError, ValueError):
                equal = value == decoded[key]
            assert equal, (key, value, decoded[key])
        return True

    codec = Codec()
    for event, kind in (
        (factories.position_event("opened", risk_level="CRITICAL"), ev.POSITION_OPENED),
        (factories.position_event("closed", close_reason="take_profit"), ev.POSITION_CLOSED),
    ):
        data = codec.encode(event)
        read, decoded = (
            position_payload(codec.read(data, PositionEvent)),
            position_payload(codec.decode(data, PositionEvent)),
        )
        assert same(read, decoded)
        assert templates.render(kind, read, markdown=True) == templates.render(kind, decoded, markdown=True)
    for signal in (factories.signal(action="buy", confidence="0.9"), factories.signal(action="buy", confidence="0.1")):
        _, verdict = factories.decided(signal)
        data = codec.encode(verdict)
        read, decoded = verdict_payload(codec.read(data, RiskVerdict)), verdict_payload(codec.decode(data, RiskVerdict))
        assert same(read, decoded) and ("quantity" in read) == (verdict.plan is not None)
        kind = ev.VERDICT_APPROVED if verdict.decision == "APPROVED" else ev.VERDICT_REJECTED
        assert templates.render(kind, read, markdown=False) == templates.render(kind, decoded, markdown=False)
    assert {factories.decided(factories.signal(action="buy", confidence=c))[1].decision for c in ("0.9", "0.1")} == {
        "APPROVED",
        "REJECTED",
    }
