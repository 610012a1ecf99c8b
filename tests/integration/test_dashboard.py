"""The dashboard served by uvicorn against real PostgreSQL and Redis: logins (password, API key,
one-time link; rate-limited), session cookie flags, every page with its headings, the CSV export,
CSRF and roles on halt/resume (audited), a `<script>` strategy name escaped on every page, the
production refusal without a user, and the SSE stream resumed with Last-Event-ID."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis

from phoenix95.api.accounts import add_user, create_key
from phoenix95.dashboard.app import create_app
from phoenix95.domain.protections import Trip
from phoenix95.domain.risk import RiskReason, SymbolLock
from phoenix95.settings import get_settings
from phoenix95.storage.compliance import apply_trip
from phoenix95.storage.postgres import Database, migrate
from phoenix95.storage.redis_state import RedisState
from tests.dashboard_seed import seed
from tests.dashboard_server import serve

pytestmark = pytest.mark.integration

XSS = "<script>alert('x')</script>"
PAGES = {
    "/": ["Overview", "Equity curve", "Trading state", "Exposure per symbol", "Pipeline health"],
    "/positions": ["Positions", "Open", "Closed"],
    "/signals": ["Signals"],
    "/risk": ["Risk", "Compliance", "Rejections by reason over time", "Kelly sizes"],
    "/backtests": ["Backtests", "Reports"],
}


BOOK_FIGURES = {
    "as_of": "2026-12-05T08:00:00+00:00",
    "day": "2026-12-05",
    "timezone": "UTC",
    "equity": "9412.5",
    "realized_pnl": "-587.5",
    "unrealized_pnl": "0",
    "day_start_equity": "10000",
    "day_pnl": "-587.5",
    "peak_equity": "10000",
    "drawdown_pct": "5.8750",
    "stop_loss_streaks": {"*": 5, "XRPUSDT": 5},
    "orders_per_minute": 3,
    "exposure": {"BTCUSDT": "1200.5"},
    "total_exposure": "1200.5",
    "halted_for": [],
}


async def _prepare(settings) -> str:
    await migrate(settings.postgres_url(), settings.postgres.db_schema)
    async with Database(settings.postgres_url(), schema=settings.postgres.db_schema) as db:
        await seed(db, signals=30, closed=10, open_positions=3)
        await db.execute("UPDATE signals SET strategy = %s WHERE signal_id = 's3'", (XSS,))
        await db.execute("UPDATE positions SET close_reason = %s WHERE position_id = md5('p5')::uuid", ("<b>x</b>",))
        await add_user(db, "alice", "correct horse battery", "operator")
        await add_user(db, "victor", "viewer password 1", "viewer")
        _, key = await create_key(db, "viewer", created_by="test")
        # the compliance monitor's work: a stop-loss guard lock (with markup in its message) and its figures
        lock = SymbolLock("XRPUSDT", RiskReason.STOPLOSS_GUARD, datetime.now(UTC) + timedelta(hours=1), "5 stop-losses")
        trip = Trip("STOPLOSS_GUARD", datetime.now(UTC), f"5 stop-losses {XSS}", {"stop_losses": "5"}, lock=lock)
        assert await apply_trip(db, "trip-dashboard", trip)
    redis = RedisState.from_url(settings.redis_url(), prefix=settings.redis.prefix)
    try:
        await redis.set_compliance_figures(BOOK_FIGURES)
    finally:
        await redis.close()
    return key


@pytest.fixture
def dashboard(namespace, monkeypatch) -> Iterator[tuple[str, str]]:
    monkeypatch.setenv("P95_DASHBOARD__LOGIN_ATTEMPTS_PER_MINUTE", "6")
    monkeypatch.setenv("P95_DASHBOARD__POLL_INTERVAL_S", "0.1")
    monkeypatch.setenv("P95_DASHBOARD__HEARTBEAT_S", "1")
    get_settings.cache_clear()
    settings = get_settings()
    key = asyncio.run(_prepare(settings))
    with serve(create_app(settings)) as url:
        yield url, key


def login(url: str, username: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=30)
    response = client.post("/login", data={"username": username, "password": password})
    assert response.status_code == 303, response.text
    return client


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match
    return match.group(1)


def test_pages_logins_roles_csrf_and_escaping(dashboard, namespace) -> None:
    url, key = dashboard
    anonymous = httpx.Client(base_url=url, timeout=30)
    assert anonymous.get("/").status_code == 303 and anonymous.get("/").headers["location"] == "/login"
    assert anonymous.get("/static/htmx.min.js").status_code == 200
    wrong = anonymous.post("/login", data={"username": "alice", "password": "wrong password!"})
    assert wrong.status_code == 401 and "Wrong user name" in wrong.text

    operator = login(url, "alice", "correct horse battery")
    set_cookie = (
        httpx.Client(base_url=url)
        .post("/login", data={"username": "alice", "password": "correct horse battery"})
        .headers["set-cookie"]
    )
    assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie.replace("Strict", "strict")
    assert "Secure" not in set_cookie  # plain HTTP in the test; Secure over HTTPS
    for path, headings in PAGES.items():
        response = operator.get(path)
        assert response.status_code == 200, (path, response.text[:300])
        for heading in headings:
            assert re.search(rf"<h[12][^>]*>{re.escape(heading)}", response.text), (path, heading)
        assert XSS not in response.text and "<b>x</b>" not in response.text, path
    risk = operator.get("/risk").text
    assert "Day PnL (2026-12-05, UTC)" in risk and "-587.50" in risk and "5.8750 %" in risk
    assert "all symbols 5, XRPUSDT 5" in risk and "BTCUSDT 1,200.50" in risk
    assert "<td>XRPUSDT</td>" in risk and "5 stop-losses &lt;script&gt;" in risk
    signals = operator.get("/signals").text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in signals
    assert "LOW_CONFIDENCE" in signals and "RSI_EXTREME" in signals
    assert "&lt;b&gt;x&lt;/b&gt;" in operator.get("/positions").text
    trace = operator.get("/signals/s3")
    assert trace.status_code == 200 and XSS not in trace.text and "&lt;script&gt;" in trace.text
    assert operator.get("/signals/nope").status_code == 404
    assert operator.get("/signals?cursor=bogus").status_code == 422

    csv_text = operator.get("/positions/closed.csv").text
    assert csv_text.splitlines()[0].startswith("position_id,symbol,side") and len(csv_text.splitlines()) == 11

    page = operator.get("/").text
    token = csrf_of(page)
    assert 'hx-confirm="Halt trading?' in page
    assert operator.post("/state", data={"action": "halt", "reason": "no csrf"}).status_code == 403
    halted = operator.post("/state", data={"action": "halt", "reason": "dashboard test", "csrf": token})
    assert halted.status_code == 200 and "HALTED" in halted.text and "user:alice" in halted.text

    viewer = login(url, "victor", "viewer password 1")
    viewer_page = viewer.get("/").text
    assert "halt-button" not in viewer_page
    refused = viewer.post("/state", data={"action": "resume", "csrf": csrf_of(viewer_page)})
    assert refused.status_code == 403

    keyed = httpx.Client(base_url=url, timeout=30)
    assert keyed.post("/login", data={"api_key": key}).status_code == 303
    assert keyed.get("/risk").status_code == 200

    async def audited() -> list[tuple]:
        from phoenix95.api import audit

        settings = get_settings()
        async with Database(settings.postgres_url(), schema=settings.postgres.db_schema) as db:
            return [(a, b, c, audit.flat(d)) for a, b, c, d in await audit.entries(db)]

    rows = asyncio.run(audited())
    assert {(r[0], r[1], r[2]) for r in rows} == {
        ("compliance-monitor", "protection", "STOPLOSS_GUARD"),  # the seeded trip
        ("user:alice", "trading_state", "HALTED"),
    }
    assert any(r[3].get("remote") == "127.0.0.1" and r[3].get("via") == "user" for r in rows)
    # login attempts are rate-limited per address, 6 in a clock minute here: 13 attempts in a row fall
    # in at most two minutes, so one of them holds 7 (however slow the steps above were)
    refused = None
    for _ in range(13):
        answer = anonymous.post("/login", data={"username": "alice", "password": "wrong password!"})
        if answer.status_code == 429:
            refused = answer
            break
        assert answer.status_code == 401
    assert refused is not None and "Retry-After" in refused.headers


def test_one_time_login_link_of_the_demo_works_once(dashboard, namespace) -> None:
    from phoenix95.cli.demo import _dashboard_login

    url, _ = dashboard
    printed = _dashboard_login(namespace.name)  # what `p95 demo --keep` prints
    assert printed["command"].endswith("p95 dashboard") and f"P95_NAMESPACE={namespace.name}" in printed["command"]
    link = printed["login_url"]
    path = link[link.index("/login/once") :]
    client = httpx.Client(base_url=url, timeout=30)
    assert client.get(path).status_code == 303
    assert client.get("/positions").status_code == 200
    assert httpx.Client(base_url=url).get(path).status_code == 401


def test_sse_resumes_from_last_event_id_without_missing_events(dashboard, namespace) -> None:
    url, _ = dashboard
    client = login(url, "alice", "correct horse battery")
    key = f"{namespace.redis_prefix}dashboard:events"
    store = redis.Redis.from_url(get_settings().redis_url(), decode_responses=True)

    heartbeats: list[str] = []

    def read_events(last_id: str | None, want: int) -> list[tuple[str, str, str]]:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        found: list[tuple[str, str, str]] = []
        with client.stream("GET", "/events", headers=headers, timeout=30) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["x-accel-buffering"] == "no"
            assert "content-encoding" not in response.headers
            event: dict[str, str] = {}
            for line in response.iter_lines():
                if line.startswith(":"):
                    heartbeats.append(line)
                if line.startswith(("id:", "event:", "data:")):
                    name, _, value = line.partition(":")
                    event[name] = event.get(name, "") + value.strip()
                elif line == "" and event:
                    if event.get("event", "").startswith("test-"):
                        found.append((event["id"], event["event"], event.get("data", "")))
                    event = {}
                    if len(found) >= want:
                        return found
        return found

    # publish while a first client listens
    first: list[tuple[str, str, str]] = []
    listener = threading.Thread(target=lambda: first.extend(read_events(None, 1)))
    listener.start()
    for _ in range(100):
        if store.exists(key):
            break
        threading.Event().wait(0.05)
    threading.Event().wait(1.6)  # the listener is connected (and has had a heartbeat)
    store.xadd(key, {"event": "test-a", "data": "one"}, maxlen=1000, approximate=True)
    listener.join(timeout=20)
    assert [e[1:] for e in first] == [("test-a", "one")]
    assert heartbeats, "no heartbeat comment within 1.6 s (heartbeat every 1 s here, 15 s by default)"
    # disconnected: three events happen meanwhile
    for name in ("test-b", "test-c", "test-d"):
        store.xadd(key, {"event": name, "data": name.upper()}, maxlen=1000, approximate=True)
    resumed = read_events(first[0][0], 3)
    assert [e[1:] for e in resumed] == [("test-b", "TEST-B"), ("test-c", "TEST-C"), ("test-d", "TEST-D")]
    ids = [first[0][0]] + [e[0] for e in resumed]
    assert ids == sorted(ids, key=lambda i: tuple(int(x) for x in i.split("-")))
    anonymous = httpx.Client(base_url=url)
    assert anonymous.get("/events").status_code == 303


def test_production_refuses_to_start_without_a_user(namespace, monkeypatch) -> None:
    from typer.testing import CliRunner

    from phoenix95.cli.main import app

    monkeypatch.setenv("P95_ENVIRONMENT", "production")
    monkeypatch.setenv("P95_INFLUX__TOKEN", "a-real-token-for-this-test")
    monkeypatch.setenv("P95_WEBHOOK__SECRETS", '{"tradingview": "a-long-enough-secret-1234"}')
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["dashboard", "--port", "1"])
    assert result.exit_code != 0
    assert "without a dashboard user" in str(result.exception) or "without a dashboard user" in result.output


def test_cli_creates_and_revokes_keys_and_adds_users(namespace, monkeypatch) -> None:
    from typer.testing import CliRunner

    from phoenix95.api.accounts import principal_for_key
    from phoenix95.cli.console import UserError
    from phoenix95.cli.main import app

    runner = CliRunner()
    created = runner.invoke(app, ["api", "key", "create", "--role", "operator", "--label", "ci"])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("p95_k")
    key_id = key.split("_")[1]
    monkeypatch.setenv("P95_TEST_PASSWORD", "a long enough password")
    added = runner.invoke(
        app, ["dashboard", "user", "add", "carol", "--role", "viewer", "--password-env", "P95_TEST_PASSWORD"]
    )
    assert added.exit_code == 0, added.output
    wrong_role = runner.invoke(app, ["api", "key", "create", "--role", "admin"])
    assert isinstance(wrong_role.exception, UserError) and "viewer or operator" in str(wrong_role.exception)

    async def check() -> tuple:
        settings = get_settings()
        async with Database(settings.postgres_url(), schema=settings.postgres.db_schema) as db:
            principal = await principal_for_key(db, key)
            stored = await db.fetch("SELECT key_hash FROM api_keys WHERE key_id = %s", (key_id,))
            user = await db.fetch("SELECT role, password_hash FROM dashboard_users WHERE name = 'carol'")
            return principal, stored, user

    principal, stored, user = asyncio.run(check())
    assert principal is not None and principal.role == "operator" and key not in str(stored)
    assert user[0][0] == "viewer" and user[0][1].startswith("$argon2id$")
    revoked = runner.invoke(app, ["api", "key", "revoke", key_id])
    assert revoked.exit_code == 0, revoked.output
    assert asyncio.run(check())[0] is None
    again = runner.invoke(app, ["api", "key", "revoke", key_id])
    assert isinstance(again.exception, UserError) and "no active API key" in str(again.exception)
