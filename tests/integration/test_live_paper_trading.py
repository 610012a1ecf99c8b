"""Paper trading live, as the README walks through it: the four stages and the simulated feed run as
`p95 worker` processes, `p95 serve` takes a TradingView-style alert on the wall clock, and the alert
becomes a verdict, an order, an open position that ticks with the simulated prices, and a close at
its stop-loss or take-profit. Tight stops, a volatile feed and a short expiry keep it under a minute."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from phoenix95.settings import get_settings
from phoenix95.streams.stages import STAGES
from phoenix95.tap.trace import trace_signal
from tests.conftest import Namespace, cleanup_namespace, make_namespace
from tests.pipeline import TIMEOUT_SCALE, Pipeline
from tests.services import ServiceSet

pytestmark = pytest.mark.integration

SECRET = "live-paper-trading-secret-0123456789"
LIVE = {
    # the stop and the target 0.15 % away; a simulated BTCUSDT moving 0.036 % per 0.25 s step
    "P95_RISK__STOP_LOSS_PCT": "0.0015",
    "P95_RISK__TAKE_PROFIT_PCT": "0.0015",
    "P95_RISK__MAX_HOLD_HOURS": "0.015",  # expires after 54 s, if neither is hit first
    "P95_RISK__MONITORING_INTERVAL_S": "0.5",
    "P95_FEED__SYMBOLS": '["BTCUSDT"]',
    "P95_FEED__INTERVAL_S": "0.25",
    "P95_FEED__VOLATILITY": "4",
    "P95_WEBHOOK__SECRETS": json.dumps({"tradingview": SECRET}),
}


@pytest.fixture
def live(services: ServiceSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Namespace]:
    ns = make_namespace(services, tmp_path / "home", **LIVE)
    for key, value in ns.env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        yield ns
    finally:
        get_settings.cache_clear()
        cleanup_namespace(services, ns)


def free_port() -> int:
    from phoenix95.cli.ports import free_port as pick

    return pick()


def wait_until(check, *, timeout: float, what: str, poll: float = 0.3):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout * TIMEOUT_SCALE
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


def health(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return dict(json.loads(response.read()))
    except Exception:
        return None


def test_a_curled_alert_is_paper_traded_live_to_its_stop_or_target(live: Namespace):
    pipeline = Pipeline(live, stages=(*STAGES, "feed"))
    port = free_port()
    serve = subprocess.Popen(
        [sys.executable, "-m", "phoenix95", "serve", "--port", str(port)],
        env={**os.environ, **live.env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        pipeline.start()
        wait_until(lambda: (health(port) or {}).get("status") == "ready", timeout=60, what="the webhook")
        # prices flowing and consumed (a signal sent before would wait, and could be judged stale)
        wait_until(lambda: _stages_consuming(pipeline), timeout=90, what="the stages to consume the prices")

        alert = {
            "passphrase": SECRET,
            "ticker": "BINANCE:BTCUSDT.P",
            "action": "buy",
            "close": "64000",  # the simulated BTCUSDT starts from the demo's reference price
            "interval": "1",
            "timenow": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "confidence": "0.9",
            "strategy": "live-walkthrough",
        }
        answer = httpx.post(f"http://127.0.0.1:{port}/webhook/signal", json=alert, timeout=10)
        assert answer.status_code == 200, answer.text
        signal_id = answer.json()["signal_id"]

        verdict = wait_until(
            lambda: _row(pipeline, "SELECT decision FROM risk_verdicts WHERE signal_id = %s", signal_id),
            timeout=30,
            what="the verdict",
        )
        assert verdict[0] == "APPROVED", verdict
        order = wait_until(
            lambda: _row(
                pipeline, "SELECT status, fill_price FROM orders WHERE signal_id = %s AND intent = 'open'", signal_id
            ),
            timeout=30,
            what="the order",
        )
        assert order[0] == "filled" and order[1] is not None, order
        closed = wait_until(
            lambda: _row(
                pipeline,
                "SELECT status, close_reason, entry_price, exit_price, stop_loss_price, take_profit_price "
                "FROM positions WHERE signal_id = %s AND status <> 'open'",
                signal_id,
            ),
            timeout=60,
            what="the position to close",
        )
        _, reason, entry, exit_price, stop, target = closed
        assert reason in ("stop_loss", "take_profit"), closed
        assert Decimal("0.0014") < abs(target - entry) / entry < Decimal("0.0016"), closed  # the tight target
        level = stop if reason == "stop_loss" else target
        # filled at the level the price crossed, less the paper exchange's slippage (0.02 % base)
        assert abs(exit_price - level) / level < Decimal("0.001"), closed

        report = trace_signal(pipeline.settings.kafka.bootstrap_servers, live.name, signal_id)
        kinds = [
            sighting.value.get("kind")
            for step in report.steps
            for sighting in step.sightings
            if sighting.value and step.topic.endswith("p95.positions.ticks")
        ]
    finally:
        serve.terminate()
        pipeline.stop()
        serve.wait(timeout=20)
    assert kinds[0] == "opened" and kinds[-1] == "closed", kinds
    assert "tick" in kinds, f"the open position was marked with the live prices: {kinds}"
    assert "Traceback" not in (serve.stderr.read() if serve.stderr else "")


def _row(pipeline: Pipeline, query: str, *args: object) -> tuple | None:
    async def fetch() -> tuple | None:
        async with pipeline.database() as db:
            rows = await db.fetch(query, args)
        return tuple(rows[0]) if rows else None

    return asyncio.run(fetch())


def _stages_consuming(pipeline: Pipeline) -> bool:
    """The stages that read prices committed offsets on them: joined, and keeping up with the feed."""
    from phoenix95.connectors.kafka_admin import committed_offsets

    async def committed() -> bool:
        bootstrap, prices = pipeline.settings.kafka.bootstrap_servers, pipeline.topics.market_prices
        for stage in ("risk", "execution", "positions"):
            offsets = await committed_offsets(bootstrap, pipeline.topics.group(stage), [prices])
            if not any(offset > 0 for offset in offsets.values()):
                return False
        return True

    try:
        return asyncio.run(committed())
    except Exception:
        return False
