"""Publishing signals from Python: validate against the contract, give each an id, encode, publish
to ``p95.signals`` keyed by symbol, and return only once the broker confirmed the write.

    async with SignalPublisher("127.0.0.1:9092") as publisher:
        done = await publisher.publish({"symbol": "BTCUSDT", "action": "buy", "price": "65000"})

    with SyncSignalPublisher("127.0.0.1:9092") as publisher:      # scripts, notebooks
        publisher.publish({"symbol": "BTCUSDT", "action": "buy", "price": "65000"})

Only the broker is needed (no workers, stores or settings file). A publish that the broker does not
confirm within `timeout` raises `BrokerUnavailable` instead of waiting: the signal may or may not have
been written, and publishing it again with the same `signal_id` is safe (the analysis stage
dead-letters a second publication of an id as DUPLICATE).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from phoenix95.schemas.codec import Codec
from phoenix95.schemas.envelope import new_id
from phoenix95.schemas.messages import Signal
from phoenix95.schemas.signal_input import InvalidSignal, build_signal
from phoenix95.schemas.topics import Topics

__all__ = ["BrokerUnavailable", "InvalidSignal", "PublishError", "Published", "SignalPublisher", "SyncSignalPublisher"]

T = TypeVar("T")
SignalLike = Signal | Mapping[str, Any]


class PublishError(Exception):
    """A signal could not be published."""


class BrokerUnavailable(PublishError):
    """The broker could not be reached, or did not confirm the write in time."""


@dataclass(frozen=True)
class Published:
    """A signal the broker confirmed, and where it was written."""

    signal: Signal
    topic: str
    partition: int
    offset: int

    @property
    def signal_id(self) -> str:
        return self.signal.signal_id


class SignalPublisher:
    """Publishes signals to ``p95.signals`` (under `namespace`, if any) and confirms delivery.

    Mappings are validated with the contract's field aliases and normalisation (see
    `phoenix95.schemas.signal_input`); one without `signal_id` gets a new UUID. `Signal` objects are
    published as they are.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        namespace: str = "",
        producer_name: str = "api",
        default_source: str = "api",
        timeout: float = 10.0,
        linger_ms: int = 0,
        client_id: str = "phoenix95-publisher",
        codec: Codec | None = None,
    ):
        self.bootstrap_servers = bootstrap_servers
        self.topics = Topics(namespace)
        self.producer_name = producer_name
        self.default_source = default_source
        self.timeout = timeout
        self.linger_ms = linger_ms
        self.client_id = client_id
        self.codec = codec or Codec()
        self._producer: AIOKafkaProducer | None = None

    @classmethod
    def from_settings(cls, settings: Any = None, **options: Any) -> SignalPublisher:
        """A publisher for the configured broker and namespace (`phoenix95.settings`)."""
        if settings is None:
            from phoenix95.settings import get_settings

            settings = get_settings()
        options.setdefault("codec", Codec.for_settings(settings))
        return cls(settings.kafka.bootstrap_servers, namespace=settings.namespace, **options)

    @property
    def topic(self) -> str:
        return self.topics.signals

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id,
            acks="all",
            linger_ms=self.linger_ms,
            max_batch_size=1 << 20,
            request_timeout_ms=max(1000, int(self.timeout * 1000)),
            enable_idempotence=False,  # Tansu cannot: InitProducerId fails
        )
        try:
            await asyncio.wait_for(producer.start(), self.timeout)
        except (KafkaError, OSError, TimeoutError) as error:
            await _quietly_stop(producer)
            raise BrokerUnavailable(
                f"cannot reach the broker at {self.bootstrap_servers}: {_describe(error)}"
            ) from None
        except BaseException:
            await _quietly_stop(producer)
            raise
        self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await _quietly_stop(producer)

    async def __aenter__(self) -> SignalPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- publishing ------------------------------------------------------------------------------

    def prepare(self, signal: SignalLike, *, signal_id: str | None = None) -> Signal:
        """Validate a signal (raises `InvalidSignal` naming the wrong fields); no broker involved."""
        if isinstance(signal, Signal):
            return signal
        if not isinstance(signal, Mapping):
            raise InvalidSignal([("signal", f"expected a mapping or a Signal, got {type(signal).__name__}")])
        return build_signal(
            signal, producer=self.producer_name, signal_id=signal_id or new_id(), default_source=self.default_source
        )

    async def publish(self, signal: SignalLike, *, timeout: float | None = None) -> Published:
        """Validate, publish and wait for the broker's confirmation."""
        return (await self.publish_many([signal], timeout=timeout))[0]

    async def publish_many(self, signals: Sequence[SignalLike], *, timeout: float | None = None) -> list[Published]:
        """Validate every signal first (nothing is published when one is invalid: `InvalidSignal`
        names it by index, e.g. ``[3].price``), then publish all and wait for every confirmation.
        A batch is not atomic: after `BrokerUnavailable` some of it may have been written."""
        prepared: list[Signal] = []
        errors: list[tuple[str, str]] = []
        for index, item in enumerate(signals):
            try:
                prepared.append(self.prepare(item))
            except InvalidSignal as error:
                errors.extend((f"[{index}].{name}" if len(signals) > 1 else name, text) for name, text in error.errors)
        if errors:
            raise InvalidSignal(errors)
        if not prepared:
            return []
        return await self.send(prepared, timeout=timeout)

    async def send(self, signals: Sequence[Signal], *, timeout: float | None = None) -> list[Published]:
        """Publish validated signals and wait for every confirmation (the webhook's path)."""
        await self.start()
        limit = self.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):  # no extra task, unlike wait_for: this is the hot path
                return await self._send(signals)
        except TimeoutError:
            raise BrokerUnavailable(
                f"the broker at {self.bootstrap_servers} did not confirm within {limit:g} s; the signal(s) may or "
                "may not have been written (publishing again with the same signal_id is safe)"
            ) from None
        except (KafkaError, OSError) as error:
            raise BrokerUnavailable(f"publishing to {self.bootstrap_servers} failed: {_describe(error)}") from None

    async def _send(self, signals: Sequence[Signal]) -> list[Published]:
        producer = self._producer
        if producer is None:
            raise PublishError("the publisher is stopped")
        topic = self.topic
        futures = []
        for signal in signals:
            headers = [self.codec.schema_header(signal), ("p95-correlation-id", signal.signal_id.encode())]
            value = self.codec.encode(signal)
            futures.append(await producer.send(topic, value, key=signal.symbol.encode(), headers=headers))
        results = await asyncio.gather(*futures)
        return [
            Published(signal, meta.topic, meta.partition, meta.offset)
            for signal, meta in zip(signals, results, strict=True)
        ]

    # -- administration ------------------------------------------------------------------------------

    async def ensure_topic(self, *, partitions: int = 4, replication_factor: int = 1) -> bool:
        """Create the signals topic when it does not exist (a broker that auto-creates topics would
        give it one partition). True when it was created."""
        from phoenix95.connectors.kafka_admin import ensure_topics

        try:
            created = await asyncio.wait_for(
                ensure_topics(
                    self.bootstrap_servers, [self.topic], partitions=partitions, replication_factor=replication_factor
                ),
                self.timeout,
            )
        except (KafkaError, OSError, TimeoutError) as error:
            raise BrokerUnavailable(
                f"cannot reach the broker at {self.bootstrap_servers}: {_describe(error)}"
            ) from None
        return bool(created)

    async def ping(self, *, timeout: float = 1.0) -> bool:
        """True when the broker answers a metadata request within `timeout`."""
        producer = self._producer
        if producer is None:
            return False
        try:
            await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout)
        except Exception:
            return False
        return True


class SyncSignalPublisher:
    """The blocking face of `SignalPublisher` for scripts and notebooks: the async publisher runs on
    an event loop in a background thread (so it also works where a loop is already running)."""

    def __init__(self, bootstrap_servers: str, **options: Any):
        self._publisher = SignalPublisher(bootstrap_servers, **options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def topic(self) -> str:
        return self._publisher.topic

    def start(self) -> None:
        try:
            self._run(self._publisher.start())
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self._run(self._publisher.stop())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()
            self._loop = self._thread = None

    def __enter__(self) -> SyncSignalPublisher:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def prepare(self, signal: SignalLike) -> Signal:
        return self._publisher.prepare(signal)

    def publish(self, signal: SignalLike, *, timeout: float | None = None) -> Published:
        return self._run(self._publisher.publish(signal, timeout=timeout))

    def publish_many(self, signals: Sequence[SignalLike], *, timeout: float | None = None) -> list[Published]:
        return self._run(self._publisher.publish_many(signals, timeout=timeout))

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="p95-publisher", daemon=True)
            thread.start()
            self._loop, self._thread = loop, thread
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()


async def _quietly_stop(producer: AIOKafkaProducer) -> None:
    try:
        await asyncio.wait_for(producer.stop(), 2)
    except Exception:  # a producer that never connected can fail to stop; nothing to release then
        pass


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    return str(error) or type(error).__name__
