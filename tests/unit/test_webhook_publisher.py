"""SignalPublisher without a broker: validation errors and an unreachable broker fail fast and clearly."""

from __future__ import annotations

import asyncio
import socket

import pytest

from phoenix95.connectors.publisher import BrokerUnavailable, InvalidSignal, SignalPublisher, SyncSignalPublisher
from tests import factories


def _closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def test_prepare_validates_and_assigns_an_id():
    publisher = SignalPublisher("127.0.0.1:1")
    first = publisher.prepare({"ticker": "BINANCE:BTCUSDT.P", "action": "buy", "price": "65000"})
    second = publisher.prepare({"ticker": "BTCUSDT", "action": "buy", "price": "65000"})
    assert first.symbol == "BTCUSDT" and first.source == "api" and first.producer == "api"
    assert first.signal_id and first.signal_id != second.signal_id
    assert (
        publisher.prepare({"symbol": "BTCUSDT", "action": "buy", "price": "1", "signal_id": "mine"}).signal_id == "mine"
    )


def test_a_signal_object_is_published_as_it_is():
    signal = factories.signal()
    assert SignalPublisher("127.0.0.1:1").prepare(signal) is signal


def test_publish_many_names_the_invalid_items_by_index_and_publishes_nothing():
    publisher = SignalPublisher(_closed_port())
    batch = [
        {"symbol": "XRPUSDT", "action": "buy", "price": "1.19"},
        {"symbol": "XRPUSDT", "action": "hold", "price": "1.19"},
        "not a mapping",
    ]
    with pytest.raises(InvalidSignal) as caught:
        asyncio.run(publisher.publish_many(batch))  # type: ignore[arg-type]
    assert [name for name, _ in caught.value.errors] == ["[1].action", "[2].signal"]


@pytest.mark.timeout(30)  # a hang fails the test
def test_an_unreachable_broker_raises_broker_unavailable_instead_of_hanging():
    publisher = SignalPublisher(_closed_port(), timeout=2.0)
    with pytest.raises(BrokerUnavailable, match="cannot reach the broker"):
        asyncio.run(publisher.publish({"symbol": "XRPUSDT", "action": "buy", "price": "1.19"}))


@pytest.mark.timeout(30)
def test_the_sync_publisher_reports_an_unreachable_broker_too():
    publisher = SyncSignalPublisher(_closed_port(), timeout=2.0)
    try:
        with pytest.raises(BrokerUnavailable, match="cannot reach the broker"):
            publisher.publish({"symbol": "XRPUSDT", "action": "buy", "price": "1"})
    finally:
        publisher.close()
