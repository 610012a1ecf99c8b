"""`p95 influx setup`: the seed's buckets with their retention on an InfluxDB 2 (here an HTTP stand-in
that speaks the part of its API influxdb-client uses), and a no-op that says so on VictoriaMetrics."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from typer.testing import CliRunner

from phoenix95.cli.main import app
from tests.http_stub import serve_json

pytestmark = pytest.mark.integration


@contextmanager
def fake_influxdb2(created: list[dict[str, Any]]) -> Iterator[str]:
    buckets: list[dict[str, Any]] = [{"id": "0", "name": "_monitoring", "orgID": "o1", "retentionRules": []}]

    def respond(method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "POST":
            bucket = {"id": str(len(buckets)), **body}
            buckets.append(bucket)
            created.append(body)
            return 201, bucket
        if path.startswith("/ping"):
            return 204, None
        if path.startswith("/api/v2/buckets"):
            return 200, {"buckets": buckets}
        if path.startswith("/api/v2/orgs"):
            return 200, {"orgs": [{"id": "o1", "name": "phoenix95"}]}
        return 404, {"code": "not found", "message": path}

    with serve_json(respond, headers={"X-Influxdb-Version": "v2.7.10"}) as url:
        yield url


def test_influx_setup_creates_the_seeds_buckets_with_their_retention_once(monkeypatch):
    from phoenix95.settings import get_settings

    created: list[dict[str, Any]] = []
    with fake_influxdb2(created) as url:
        monkeypatch.setenv("P95_INFLUX__URL", url)
        get_settings.cache_clear()
        first = CliRunner().invoke(app, ["influx", "setup"])
        second = CliRunner().invoke(app, ["influx", "setup"])
    get_settings.cache_clear()
    assert first.exit_code == 0 and second.exit_code == 0, (first.output, second.output)
    retention = {b["name"]: b["retentionRules"][0]["everySeconds"] // 86400 for b in created}
    assert retention == {"s4_trading_data": 365, "s4_market_data": 90, "s4_system_metrics": 30, "s4_risk_metrics": 180}
    assert all(b["orgID"] == "o1" for b in created)
    assert "created bucket s4_trading_data (retention 365 d)" in first.output
    assert second.output.count("exists") == 4  # the second run creates nothing


def test_influx_setup_on_victoria_metrics_is_a_no_op_that_says_so(services, monkeypatch):
    from phoenix95.settings import get_settings

    if not services.influx:
        pytest.skip("no time-series store on this machine")
    monkeypatch.setenv("P95_INFLUX__URL", services.influx)
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["influx", "setup"])
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "is VictoriaMetrics" in result.output and "nothing to set up" in result.output
