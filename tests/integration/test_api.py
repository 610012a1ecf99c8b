"""The REST API against real PostgreSQL and Redis (httpx over ASGI): every endpoint, its filters and
cursor pagination, 401 without a key, 403 for a viewer changing state, 429 past the key's rate limit
with Retry-After, 422 naming the bad field, 404 for unknown ids; a halt through the API goes the
`p95 halt` path (row, Redis mirror, audit log with actor api:<key id> and the client address)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from phoenix95.api.accounts import create_key, revoke_key
from phoenix95.api.app import create_app
from phoenix95.api.runtime import Runtime
from phoenix95.settings import get_settings
from phoenix95.storage.compliance import apply_trip
from phoenix95.storage.postgres import migrate
from tests.dashboard_seed import seed

pytestmark = pytest.mark.integration


class Api:
    def __init__(self, client: httpx.AsyncClient, runtime: Runtime, viewer: str, operator: str, viewer_id: str):
        self.client, self.runtime, self.viewer, self.operator, self.viewer_id = (
            client,
            runtime,
            viewer,
            operator,
            viewer_id,
        )

    async def get(self, path: str, key: str | None = None, **params: object) -> httpx.Response:
        return await self.client.get(path, params=params, headers={"X-API-Key": key or self.viewer})


@pytest.fixture
async def api(namespace, monkeypatch) -> AsyncIterator[Api]:
    monkeypatch.setenv("P95_API__RATE_LIMIT_PER_MINUTE", "1000")
    get_settings.cache_clear()
    settings = get_settings()
    await migrate(settings.postgres_url(), settings.postgres.db_schema)
    runtime = await Runtime.start(settings, lag=False)
    await seed(runtime.db, signals=30, closed=10, open_positions=3)
    viewer_id, viewer = await create_key(runtime.db, "viewer", created_by="test")
    _, operator = await create_key(runtime.db, "operator", created_by="test")
    app = create_app(settings, runtime)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield Api(client, runtime, viewer, operator, viewer_id)
    await runtime.stop()


async def collect(api: Api, path: str, limit: int, **params: object) -> list[dict]:
    items: list[dict] = []
    cursor = None
    while True:
        extra = {"cursor": cursor} if cursor else {}
        response = await api.get(path, limit=limit, **params, **extra)
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["items"]) <= limit
        items.extend(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return items


async def test_lists_paginate_newest_first_with_filters(api: Api) -> None:
    signals = await collect(api, "/v1/signals", 7)
    assert [s["signal_id"] for s in signals] == [f"s{i}" for i in range(1, 31)]  # every one once, newest first
    assert signals[2]["decision"] == "REJECTED" and signals[2]["reasons"] == ["LOW_CONFIDENCE", "RSI_EXTREME"]
    assert signals[0]["decision"] == "APPROVED" and signals[0]["reasons"] == []
    rejected = await collect(api, "/v1/signals", 4, decision="REJECTED")
    assert [s["signal_id"] for s in rejected] == [f"s{i}" for i in range(3, 31, 3)]
    xrp = await collect(api, "/v1/signals", 50, symbol="XRPUSDT", reason="RSI_EXTREME")
    assert [s["signal_id"] for s in xrp] == ["s3"]
    assert len(await collect(api, "/v1/signals", 50, symbol="BTCUSDT", decision="REJECTED")) == 0
    assert (await api.get("/v1/signals/s3")).json()["reasons"] == ["LOW_CONFIDENCE", "RSI_EXTREME"]

    verdicts = await collect(api, "/v1/verdicts", 9, decision="APPROVED")
    assert len(verdicts) == 20 and all(v["decision"] == "APPROVED" for v in verdicts)
    assert [v["signal_id"] for v in await collect(api, "/v1/verdicts", 5, signal_id="s4")] == ["s4"]
    orders = await collect(api, "/v1/orders", 5)
    assert len(orders) == 13 and {o["status"] for o in orders} == {"filled"}
    assert await collect(api, "/v1/orders", 5, status="rejected") == []
    trades = await collect(api, "/v1/trades", 4, symbol="BTCUSDT")
    assert len(trades) == 7 and {t["symbol"] for t in trades} == {"BTCUSDT"}

    open_ = await collect(api, "/v1/positions", 2, status="open")
    closed = await collect(api, "/v1/positions", 3, status="closed")
    assert (len(open_), len(closed)) == (3, 10)
    assert {p["status"] for p in open_} == {"open"} and all(p["close_reason"] for p in closed)
    assert len(await collect(api, "/v1/positions", 6)) == 13
    assert {p["side"] for p in await collect(api, "/v1/positions", 50, side="long")} == {"long"}
    position = await api.get(f"/v1/positions/{closed[0]['position_id']}")
    assert position.json()["realized_pnl"] in ("2.50000000", "-1.25000000")

    dead = await collect(api, "/v1/dead-letters", 3)
    assert len(dead) == 4
    assert {d["stage"] for d in await collect(api, "/v1/dead-letters", 3, stage="risk")} == {"risk"}


async def test_account_shows_equity_pnl_fees_and_exposure(api: Api) -> None:
    body = (await api.get("/v1/account")).json()
    # 10 closed: the even signal ids won 2.5, the odd lost 1.25 (ids 1,2,4,5,7,8,10,11,13,14,16,17,19 approved)
    assert body["open_positions"] == 3 and body["closed_positions"] == 10
    assert body["unrealized_pnl"] == "4.50000000"
    realized = sum(2.5 if i % 2 == 0 else -1.25 for i in (5, 7, 8, 10, 11, 13, 14, 16, 17, 19))
    assert float(body["realized_pnl"]) == pytest.approx(realized)
    assert float(body["equity"]) == pytest.approx(10000 + realized + 4.5)
    assert float(body["fees"]) == pytest.approx(13 * 0.02)
    assert set(body["exposure"]) == {"BTCUSDT", "ETHUSDT"}  # open: s1, s4 (BTC) and s2 (ETH)


async def test_halt_through_the_api_is_the_p95_halt_path_and_audited(api: Api) -> None:
    assert (await api.get("/v1/trading-state")).json()["state"] == "ACTIVE"
    change = {"state": "HALTED", "reason": "api halt test"}
    viewer = await api.client.put("/v1/trading-state", json=change, headers={"X-API-Key": api.viewer})
    assert viewer.status_code == 403
    response = await api.client.put("/v1/trading-state", json=change, headers={"X-API-Key": api.operator})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["state"] == "HALTED" and body["updated_by"].startswith("api:k")
    mirror = await api.runtime.redis.client.hgetall(api.runtime.redis.keys.trading_state())
    assert mirror[b"state"] == b"HALTED" and mirror[b"reason"] == b"api halt test"
    from phoenix95.api import audit

    rows = await audit.entries(api.runtime.db)
    assert {(r[0], r[1], r[2]) for r in rows} == {(body["updated_by"], "trading_state", "HALTED")}
    assert any(audit.flat(r[3]).get("remote") == "203.0.113.7" for r in rows)  # who, what and from where
    assert all(r[3].get("reason") == "api halt test" for r in rows)
    bad = await api.client.put(
        "/v1/trading-state", json={"state": "PAUSED", "reason": "x"}, headers={"X-API-Key": api.operator}
    )
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "state"]


async def test_keys_bad_params_and_unknown_ids(api: Api) -> None:
    assert (await api.client.get("/v1/signals")).status_code == 401
    assert (await api.get("/v1/signals", key="p95_kdeadbeef_nope")).status_code == 401
    key_id, key = await create_key(api.runtime.db, "viewer", created_by="test")
    assert (await api.get("/v1/account", key=key)).status_code == 200
    await revoke_key(api.runtime.db, key_id)
    assert (await api.get("/v1/account", key=key)).status_code == 401

    for params, field in (
        ({"limit": 501}, "limit"),
        ({"limit": 0}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"symbol": "btc'; DROP TABLE signals;--"}, "symbol"),
        ({"since": "yesterday"}, "since"),
        ({"decision": "MAYBE"}, "decision"),
        ({"cursor": "garbage"}, "cursor"),
    ):
        response = await api.get("/v1/signals", **params)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["detail"][0]["loc"] == ["query", field]
    other = (await api.get("/v1/verdicts", limit=1)).json()["next_cursor"]
    assert (await api.get("/v1/signals", cursor=other)).json()["detail"][0]["loc"] == ["query", "cursor"]
    assert (await api.get("/v1/signals", strategy="x' OR '1'='1")).json()["items"] == []  # bound, not spliced
    assert (await api.get("/v1/signals/nope")).status_code == 404
    assert (await api.get("/v1/positions/00000000-0000-0000-0000-000000000000")).status_code == 404
    assert (await api.get("/v1/positions/not-a-uuid")).status_code == 404
    assert (await api.get("/v1/replays/00000000-0000-0000-0000-000000000000")).status_code == 404
    assert (await api.get("/v1/signals/nope/trace")).status_code == 404


async def test_rate_limit_answers_429_with_retry_after(api: Api, monkeypatch) -> None:
    api.runtime.settings = api.runtime.settings.model_copy(
        update={"api": api.runtime.settings.api.model_copy(update={"rate_limit_per_minute": 5})}
    )
    codes = [(await api.get("/v1/trading-state")).status_code for _ in range(5)]
    assert codes == [200] * 5
    limited = await api.get("/v1/trading-state")
    if limited.status_code == 200:  # the minute turned over between the calls: one more full round
        codes = [(await api.get("/v1/trading-state")).status_code for _ in range(5)]
        limited = await api.get("/v1/trading-state")
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 61
    keys = [k async for k in api.runtime.redis.client.scan_iter(match=f"{api.runtime.redis.keys.prefix}rate_limit:*")]
    assert keys and all(f"rate_limit:{api.viewer_id}:".encode() in k for k in keys)
    assert (await api.get("/v1/trading-state", key=api.operator)).status_code == 200  # per key


async def test_replay_reports_and_openapi(api: Api) -> None:
    started = await api.client.post(
        "/v1/replays", json={"set": ["risk.leverage=10"]}, headers={"X-API-Key": api.operator}
    )
    assert started.status_code == 202, started.text
    report_id = started.json()["report_id"]
    assert (await api.client.post("/v1/replays", json={}, headers={"X-API-Key": api.viewer})).status_code == 403
    bad = await api.client.post("/v1/replays", json={"set": ["nonsense"]}, headers={"X-API-Key": api.operator})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "set"]
    for _ in range(240):
        report = (await api.get(f"/v1/replays/{report_id}")).json()
        if report["status"] != "running":
            break
        await asyncio.sleep(0.25)
    assert report["status"] == "done", report
    assert report["summary"]["signals"] > 0 and report["summary"]["settings"] == {"P95_RISK__LEVERAGE": "10"}
    assert [r["report_id"] for r in (await api.get("/v1/replays")).json()["items"]] == [report_id]
    [(html,)] = await api.runtime.db.fetch("SELECT html FROM replay_reports WHERE report_id = %s", (report_id,))
    for chart in ("equity-curve", "drawdown", "xrpusdt-price", "returns-by-day"):  # every chart with its grid
        svg = html.split(f"<svg id='{chart}'", 1)[1].split("</svg>", 1)[0]
        assert "class='grid'" in svg and "class='tick'" in svg, chart
    price = html.split("<svg id='xrpusdt-price'", 1)[1].split("</svg>", 1)[0]
    assert "fill='#16a34a'" in price and "fill='#dc2626'" in price  # entries coloured by outcome
    assert "<th>ROE</th>" in html
    schema = (await api.client.get("/openapi.json")).json()
    for path in ("/v1/signals", "/v1/positions", "/v1/account", "/v1/trading-state", "/v1/lag", "/v1/replays"):
        assert path in schema["paths"]
    assert (await api.client.get("/docs")).status_code == 200


async def test_compliance_now_and_the_days_report(api: Api) -> None:
    from datetime import UTC, datetime

    from phoenix95.domain.protections import Trip

    empty = (await api.get("/v1/compliance")).json()
    assert empty == {"figures": None, "locks": [], "trips": []}  # no monitor has run yet
    halt = Trip("MAX_DRAWDOWN", datetime.now(UTC), "drawdown 26.00% from the equity peak >= 25%", {}, halt=True)
    assert await apply_trip(api.runtime.db, "trip-api", halt)
    await api.runtime.redis.set_compliance_figures({"equity": "7400", "drawdown_pct": "26.0000"})
    now = (await api.get("/v1/compliance")).json()
    assert now["figures"] == {"equity": "7400", "drawdown_pct": "26.0000"}
    assert [(t["trip_id"], t["reason"], t["subject"]) for t in now["trips"]] == [("trip-api", "MAX_DRAWDOWN", None)]

    report = (await api.get("/v1/compliance/report")).json()
    assert [t["reason"] for t in report["protections"]] == ["MAX_DRAWDOWN"]
    assert [(c["actor"], c["state"]) for c in report["state_changes"]] == [("compliance-monitor", "HALTED")]
    assert report["audit"]["ok"] is True and report["audit"]["entries"] >= 1 and report["timezone"] == "UTC"
    quick = (await api.get("/v1/compliance/report", verify="false", day="2021-11-15")).json()
    assert "audit" not in quick and quick["day"] == "2021-11-15" and quick["protections"] == []
    assert (await api.get("/v1/compliance/report", day="yesterday")).status_code == 422
    assert (await api.client.get("/v1/compliance")).status_code == 401
