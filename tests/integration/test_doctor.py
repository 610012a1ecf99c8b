"""`p95 doctor`: a line per check with ✓ or ✗ and the fix; exit status 1 when a required check fails."""

from __future__ import annotations

import json
import socket
from datetime import timedelta

import pytest
from typer.testing import CliRunner

from phoenix95.cli.main import app
from phoenix95.settings import get_settings

pytestmark = pytest.mark.integration


def doctor(*args: str):  # type: ignore[no-untyped-def]
    get_settings.cache_clear()
    return CliRunner().invoke(app, ["doctor", *args])


def checks(result) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    return {check["name"]: check for check in json.loads(result.stdout)}


def test_a_ready_stack_passes_every_required_check(namespace):
    from phoenix95.stack.ready import make_ready

    make_ready(get_settings())
    result = doctor("--json")
    assert result.exit_code == 0, result.output
    found = checks(result)
    assert {"python", "broker", "topics", "postgresql", "migrations", "redis", "time series", "clock"} <= set(found)
    assert {"kcat", "chromium"} <= set(found)  # optional tools: reported, never required
    assert all(check["ok"] for check in found.values() if check["required"]), found
    assert found["postgresql"]["detail"].startswith("PostgreSQL ")
    assert found["redis"]["detail"].startswith("Redis ")
    assert "9 present" in found["topics"]["detail"]
    pretty = doctor()
    assert pretty.exit_code == 0 and "✓ broker" in pretty.stderr and pretty.stderr.strip().endswith("ready")


def test_an_unmigrated_database_and_missing_topics_fail_with_their_fix(namespace):
    result = doctor()
    assert result.exit_code == 1
    text = result.stderr
    assert "✗ migrations" in text and "fix: p95 db migrate" in text
    assert "✗ topics" in text and "missing:" in text and "fix: p95 up" in text
    assert "✓ postgresql" in text and "✓ redis" in text


def test_a_stopped_service_is_a_failed_check_not_a_traceback(namespace, monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    monkeypatch.setenv("P95_REDIS__URL", f"redis://127.0.0.1:{closed}/0")
    result = doctor("--json")
    assert result.exit_code == 1 and "Traceback" not in result.output
    found = checks(result)
    assert not found["redis"]["ok"] and found["redis"]["fix"].startswith("start the stack: p95 up")
    assert found["broker"]["ok"] and found["postgresql"]["ok"]


def test_an_embedded_broker_nearing_its_limit_is_warned_about_before_it_is_reached(namespace, monkeypatch):
    import asyncio

    from phoenix95.cli import doctor as doctor_module
    from phoenix95.schemas.codec import Codec
    from phoenix95.schemas.topics import Topics
    from phoenix95.stack.manager import Stack
    from phoenix95.stack.ready import make_ready
    from phoenix95.stack.services import Endpoint
    from phoenix95.streams.producer import EventProducer
    from tests import factories

    settings = get_settings()
    make_ready(settings)
    Stack(settings.home).save({"kafka": Endpoint("kafka", settings.kafka.bootstrap_servers, kind="tansu")})
    monkeypatch.setattr(doctor_module, "EMBEDDED_BROKER_LIMIT", 40)
    found = checks(doctor("--json"))
    assert found["broker growth"]["ok"] and "0%" in found["broker growth"]["detail"]

    async def publish() -> None:
        producer = EventProducer(
            settings.kafka.bootstrap_servers, Topics(settings.namespace), Codec.for_settings(settings)
        )
        await producer.start()
        try:  # one send per price: 30 records in one partition (XRPUSDT's)
            for minute in range(30):
                await producer.publish([factories.price(at=factories.T0 + timedelta(minutes=minute))])
        finally:
            await producer.stop()

    asyncio.run(publish())
    result = doctor("--json")
    assert result.exit_code == 0, result.output  # a warning, not a failure
    growth = checks(result)["broker growth"]
    assert not growth["ok"] and not growth["required"]
    assert "p95.market.prices" in growth["detail"] and "of the embedded broker's ~40" in growth["detail"]
    assert growth["fix"].startswith("p95 down && p95 up")
