"""Producing events: encode, route to the topic of their type, key by symbol, and wait for the
broker's acknowledgement before returning (so an input is acked only after its outputs are written).
A position event that opens or closes the position or changes its risk level goes to
p95.positions.lifecycle as well, in the same send (`streams/lifecycle.py`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from phoenix95.schemas import topics as topic_names
from phoenix95.schemas.codec import Codec
from phoenix95.schemas.envelope import Event
from phoenix95.schemas.messages import (
    Analysis,
    ControlEvent,
    DeadLetter,
    MarketPrice,
    Order,
    PositionEvent,
    RiskVerdict,
    Signal,
)
from phoenix95.schemas.topics import Topics
from phoenix95.storage.retry import retry_transient
from phoenix95.streams.lifecycle import LifecycleFilter
from phoenix95.streams.ownership import BOOK_KEY

logger = logging.getLogger(__name__)

TOPIC_OF: dict[type[Event], str] = {
    Signal: topic_names.SIGNALS,
    Analysis: topic_names.ANALYSIS,
    RiskVerdict: topic_names.RISK_VERDICTS,
    Order: topic_names.ORDERS,
    PositionEvent: topic_names.POSITION_TICKS,
    MarketPrice: topic_names.MARKET_PRICES,
    DeadLetter: topic_names.DLQ,
    ControlEvent: topic_names.CONTROL_EVENTS,
}
#: Topics that hold copies of another topic's events, chosen by the producer: topic -> the event type.
DERIVED_TOPICS: dict[str, type[Event]] = {topic_names.POSITION_LIFECYCLE: PositionEvent}


def key_of(event: Event) -> bytes | None:
    if isinstance(event, DeadLetter):
        return event.original_key
    if isinstance(event, Analysis):
        # the risk stage's input: keyed by book, so one risk instance decides for a whole book at a
        # time and its portfolio limits stay exact with several instances (docs/scaling.md)
        return BOOK_KEY
    symbol = getattr(event, "symbol", None)
    return symbol.encode() if isinstance(symbol, str) else None


def is_transient(error: BaseException) -> bool:
    return isinstance(error, KafkaError | asyncio.TimeoutError | ConnectionError | OSError) and getattr(
        error, "retriable", True
    )


class EventProducer:
    """An aiokafka producer that publishes our events and confirms delivery."""

    def __init__(
        self,
        bootstrap_servers: str,
        topics: Topics,
        codec: Codec,
        *,
        linger_ms: int = 1,
        client_id: str = "phoenix95",
        request_timeout_ms: int = 30000,
        enable_idempotence: bool = False,
    ):
        self.topics = topics
        self.codec = codec
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            acks="all",
            linger_ms=linger_ms,
            max_batch_size=1 << 20,
            request_timeout_ms=request_timeout_ms,
            # Tansu cannot (InitProducerId fails: see README, Guarantees); Apache Kafka can
            # (`kafka.idempotent_producer`, on in docker-compose.cluster.yml)
            enable_idempotence=enable_idempotence,
        )
        self._started = False
        #: Which position events also go to the lifecycle topic (the risk level last sent per position;
        #: `forget_positions` after a rebalance).
        self.lifecycle = LifecycleFilter()

    async def start(self) -> None:
        if not self._started:
            await self._producer.start()
            self._started = True

    async def stop(self) -> None:
        if self._started:
            await self._producer.stop()
            self._started = False

    def forget_positions(self) -> None:
        """The positions this producer published may have moved to another instance (a rebalance) and
        changed risk level there: send the next event of each to the lifecycle topic too."""
        self.lifecycle.forget()

    def topic_for(self, event: Event) -> str:
        return self.topics.name(TOPIC_OF[type(event)])

    async def publish(self, events: Sequence[Event], *, dead_letter_keys: Sequence[bytes | None] = ()) -> None:
        if not events:
            return
        encoded = [
            (
                self.topic_for(e),
                key_of(e),
                self.codec.encode(e),
                [self.codec.schema_header(e), ("p95-correlation-id", e.correlation_id.encode())],
            )
            for e in events
        ]
        lifecycle, changes = self.lifecycle.select(events)
        if lifecycle:  # the same bytes, to the lifecycle topic as well
            chosen = {id(e) for e in lifecycle}
            topic = self.topics.name(topic_names.POSITION_LIFECYCLE)
            copies = [
                (topic, key, value, headers)
                for event, (_, key, value, headers) in zip(events, encoded, strict=True)
                if id(event) in chosen
            ]
            encoded.extend(copies)
        await retry_transient(lambda: self._send_all(encoded), what="kafka produce", is_transient=is_transient)
        self.lifecycle.remember(changes)

    async def publish_raw(self, records: Sequence[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]]) -> None:
        await retry_transient(lambda: self._send_all(list(records)), what="kafka produce", is_transient=is_transient)

    async def _send_all(self, encoded: Sequence[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]]) -> None:
        futures = [
            await self._producer.send(topic, value, key=key, headers=headers) for topic, key, value, headers in encoded
        ]
        await asyncio.gather(*futures)


class LazyProducer:
    """An EventProducer started on first use (for a connector that publishes rarely: control events)."""

    def __init__(self, settings: Any, client_id: str = "phoenix95-exchange"):
        self.settings = settings
        self.client_id = client_id
        self._producer: EventProducer | None = None

    async def publish(self, events: Sequence[Event]) -> None:
        if self._producer is None:
            codec = Codec.for_settings(self.settings)
            codec.prepare()
            producer = EventProducer(
                self.settings.kafka.bootstrap_servers,
                Topics(self.settings.namespace),
                codec,
                client_id=self.client_id,
            )
            await producer.start()
            self._producer = producer
        await self._producer.publish(events)

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
