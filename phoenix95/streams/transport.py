"""Faust transport tuned for our broker.

Faust's aiokafka driver hard-codes ``fetch_max_wait_ms=1500`` when it creates the worker consumer
(faust/transport/drivers/aiokafka.py, ``_create_worker_consumer``). On Tansu a fetch waits that long
whenever a partition has no new data, so every hop of the pipeline took hundreds of milliseconds.
`TunedTransport` creates the consumer as Faust does and then sets the configured wait.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka


class _TunedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait_ms = getattr(self.app, "p95_fetch_max_wait_ms", None)
        if wait_ms is not None:
            if not hasattr(consumer, "_fetch_max_wait_ms"):
                raise RuntimeError("aiokafka changed: AIOKafkaConsumer has no _fetch_max_wait_ms to tune")
            consumer._fetch_max_wait_ms = int(wait_ms)
        return consumer


class _TunedConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _TunedConsumerThread(self, loop=self.loop, beacon=self.beacon)


class TunedTransport(faust_aiokafka.Transport):
    Consumer = _TunedConsumer


class TunedApp(faust.App):
    """A Faust app whose consumer uses `fetch_max_wait_ms` from our settings."""

    p95_fetch_max_wait_ms: int | None = None

    def _new_transport(self) -> Any:
        return TunedTransport(self.conf.broker_consumer, self)


def fresh_highwater(app: Any, tp: Any, max_age_s: float = 5.0) -> int | None:
    """The high watermark of a partition from the last fetch response of the Faust app's own consumer
    (`consumer_highwater`). Read from another thread than the consumer's: plain attribute reads."""
    from phoenix95.streams.chores import consumer_highwater

    thread = getattr(getattr(app, "_consumer", None), "_thread", None)
    return consumer_highwater(getattr(thread, "_consumer", None), tp, max_age_s)
