"""`p95 doctor`: a line per check with ✓ or ✗ and the fix; exit status 1 when a required check fails."""

from __future__ import annotations

import json
import socket

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
    assert "8 present" in found["topics"]["detail"]
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
