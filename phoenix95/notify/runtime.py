"""Builds the notifications stage with its adapters (called by streams/wiring.py)."""

from __future__ import annotations

from typing import Any

from phoenix95.notify.channels import Router, build_channels
from phoenix95.notify.sender import NotifyMetrics, Sender
from phoenix95.notify.stage import HealthWatch, NotificationSink, NotificationStage
from phoenix95.notify.store import NotificationStore
from phoenix95.schemas.codec import Codec
from phoenix95.schemas.topics import Topics
from phoenix95.settings import Settings
from phoenix95.storage.postgres import Database

#: Stages whose heartbeat and lag the notifications stage watches.
WATCHED_STAGES: tuple[str, ...] = ("analysis", "risk", "execution", "positions")


def build(
    settings: Settings, codec: Codec, database: Database, *, registry: Any = None, watch_health: bool = True
) -> NotificationStage:
    """The stage, with its own sink (`stage.own_sink`: the outbox rows, then a wake-up of the sender)."""
    notify = settings.notify
    channels = build_channels(notify)  # ConfigError names a bad URL or rule
    store = NotificationStore(database)
    sender = Sender(channels, store, NotifyMetrics(registry), notify)
    stage = NotificationStage(
        codec,
        Router(notify, channels),
        store,
        sender=sender,
        health=HealthWatch(settings, WATCHED_STAGES) if watch_health else None,
        dlq_window_s=notify.dlq_window_s,
        health_interval_s=notify.health_interval_s,
        retention_days=notify.retention_days,
        retention_interval_s=notify.retention_interval_s,
        topic_names=Topics(settings.namespace),
    )
    stage.own_sink = NotificationSink(database, on_written=sender.wake, sender=sender)
    return stage
