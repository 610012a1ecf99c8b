"""The dashboard app: server-rendered pages (Jinja2, autoescaped), htmx for the buttons and forms, SSE
for the live parts. Sessions are HttpOnly SameSite=Strict cookies (Secure over HTTPS); every POST
carries the session's CSRF token; operator actions are audited through api/audit.record."""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

from phoenix95.api import accounts, reads
from phoenix95.api.runtime import Runtime, minute_now
from phoenix95.api.security import Principal
from phoenix95.dashboard import live, sessions
from phoenix95.domain.trading_state import TradingState
from phoenix95.replay import charts
from phoenix95.settings import Settings

HERE = Path(__file__).parent
PAGE_SIZE = 50
STATES = {"halt": TradingState.HALTED, "reduce": TradingState.REDUCING, "resume": TradingState.ACTIVE}


class NotLoggedIn(Exception):
    pass


def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"], default_for_string=True, default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = _money
    env.filters["num"] = _num
    env.filters["when"] = lambda v: f"{v:%Y-%m-%d %H:%M:%S}" if v is not None else ""
    return env


def _money(value: Any, places: int = 2) -> str:
    if value is None or value == "":
        return ""
    number = Decimal(str(value))
    return f"{number:,.{places}f}"


def _num(value: Any) -> str:
    if value is None or value == "":
        return ""
    number = Decimal(str(value))
    if number == 0:
        return "0"
    text = f"{number:,.8f}".rstrip("0").rstrip(".")
    return text


def create_app(settings: Settings, runtime: Runtime | None = None, *, feed: bool = True) -> FastAPI:
    env = environment()

    def render_fragment(name: str, context: dict[str, Any]) -> str:
        return env.get_template(name).render(**context)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = runtime is None
        app.state.runtime = runtime or await Runtime.start(settings)
        try:
            if feed:
                async with live.running(live.Feed(app.state.runtime, render_fragment)):
                    yield
            else:
                yield
        finally:
            if own:
                await app.state.runtime.stop()

    app = FastAPI(title="Phoenix95 dashboard", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    if runtime is not None:
        app.state.runtime = runtime
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def rt(request: Request) -> Runtime:
        return request.app.state.runtime  # type: ignore[no-any-return]

    async def session_of(request: Request) -> sessions.Session:
        found = await sessions.load(rt(request).redis, request.cookies.get(sessions.COOKIE))
        if found is None:
            raise NotLoggedIn()
        return found

    def check_csrf(request: Request, session: sessions.Session, form_token: str | None) -> None:
        import hmac

        token = request.headers.get("x-csrf-token") or form_token or ""
        if not hmac.compare_digest(token.encode(), session.csrf.encode()):
            raise HTTPException(403, "missing or wrong CSRF token")

    def page(request: Request, name: str, session: sessions.Session | None, **context: Any) -> HTMLResponse:
        html = env.get_template(name).render(
            request=request,
            session=session,
            user=session.principal if session else None,
            path=request.url.path,
            **context,
        )
        return HTMLResponse(html, headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"})

    @app.exception_handler(NotLoggedIn)
    async def to_login(request: Request, _: NotLoggedIn) -> Response:
        if request.headers.get("hx-request"):
            return Response(status_code=401, headers={"HX-Redirect": "/login"})
        return RedirectResponse("/login", status_code=303)

    def secure(request: Request) -> bool:
        return request.url.scheme == "https" or settings.dashboard.secure_cookies

    def logged_in(request: Request, principal: Principal, token: str) -> Response:
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            sessions.COOKIE,
            token,
            max_age=settings.dashboard.session_ttl_s,
            httponly=True,
            samesite="strict",
            secure=secure(request),
            path="/",
        )
        return response

    # -- login -----------------------------------------------------------------------------------------

    @app.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request) -> HTMLResponse:
        return page(request, "login.html", None, error=None)

    @app.post("/login", response_class=HTMLResponse)
    async def login(
        request: Request,
        username: str = Form(""),
        password: str = Form(""),
        api_key: str = Form(""),
    ) -> Response:
        runtime = rt(request)
        address = request.client.host if request.client else "unknown"
        minute, retry_after = minute_now()
        allowed, _ = await runtime.redis.hit_rate_limit(
            f"dashboard-login:{address}", minute, settings.dashboard.login_attempts_per_minute
        )
        if not allowed:
            response = page(request, "login.html", None, error="Too many login attempts; wait a minute.")
            response.status_code = 429
            response.headers["Retry-After"] = str(retry_after)
            return response
        principal: Principal | None = None
        if api_key.strip():
            principal = await accounts.principal_for_key(runtime.db, api_key.strip()[:200])
        elif username and password:
            principal = await accounts.authenticate_user(runtime.db, username[:64], password[:200])
        if principal is None:
            response = page(request, "login.html", None, error="Wrong user name, password or API key.")
            response.status_code = 401
            return response
        token = await sessions.create(runtime.redis, principal, settings.dashboard.session_ttl_s)
        return logged_in(request, principal, token)

    @app.get("/login/once")
    async def login_once(request: Request, token: str = "") -> Response:
        runtime = rt(request)
        principal = await sessions.redeem(runtime.redis, token[:100])
        if principal is None:
            response = page(request, "login.html", None, error="That login link was used already or has expired.")
            response.status_code = 401
            return response
        return logged_in(
            request, principal, await sessions.create(runtime.redis, principal, settings.dashboard.session_ttl_s)
        )

    @app.post("/logout")
    async def logout(request: Request, csrf: str | None = Form(None)) -> Response:
        session = await session_of(request)
        check_csrf(request, session, csrf)
        await sessions.destroy(rt(request).redis, request.cookies.get(sessions.COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(sessions.COOKIE, path="/")
        return response

    # -- pages -----------------------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    async def overview(request: Request) -> HTMLResponse:
        session = await session_of(request)
        runtime = rt(request)
        account = await reads.account(runtime.db, runtime.redis, settings.risk.starting_equity)
        curve = await reads.equity_curve(runtime.db, settings.risk.starting_equity)
        state = await _state(runtime)
        return page(
            request,
            "overview.html",
            session,
            account=account,
            equity_chart=charts.line_chart(
                [(at, float(v)) for at, v in curve], chart_id="equity-curve", title="Equity (realized)", unit=""
            ),
            state=state,
            lag=runtime.lag_rows(),
            lag_error=runtime.lag_error,
            dead_last_hour=await reads.dead_letters_since(runtime.db, timedelta(hours=1)),
            workers=await reads.workers_alive(runtime.redis),
        )

    @app.get("/positions", response_class=HTMLResponse)
    async def positions(request: Request, cursor: str | None = None) -> HTMLResponse:
        session = await session_of(request)
        runtime = rt(request)
        open_rows = await reads.open_positions(runtime.db, runtime.redis)
        try:
            closed = await reads.page(runtime.db, reads.CLOSED_POSITIONS, {}, limit=PAGE_SIZE, cursor=cursor)
        except reads.BadCursor as error:
            raise HTTPException(422, f"cursor: {error}") from None
        return page(request, "positions.html", session, positions=open_rows, closed=closed)

    @app.get("/positions/closed.csv")
    async def closed_csv(request: Request) -> Response:
        await session_of(request)
        runtime = rt(request)
        columns = [
            "position_id",
            "symbol",
            "side",
            "quantity",
            "entry_price",
            "exit_price",
            "opened_at",
            "closed_at",
            "close_reason",
            "realized_pnl",
            "total_fees_paid",
            "funding_paid",
        ]

        async def rows() -> AsyncIterator[str]:
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(columns)
            cursor = None
            while True:
                result = await reads.page(runtime.db, reads.CLOSED_POSITIONS, {}, limit=1000, cursor=cursor)
                for item in result.items:
                    writer.writerow([_csv_cell(reads.plain(item[c])) for c in columns])
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
                cursor = result.next_cursor
                if cursor is None:
                    return

        return StreamingResponse(
            rows(),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="closed-positions.csv"'},
        )

    @app.get("/signals", response_class=HTMLResponse)
    async def signals(request: Request, cursor: str | None = None, decision: str | None = None) -> HTMLResponse:
        session = await session_of(request)
        if decision not in (None, "", "APPROVED", "REJECTED"):
            raise HTTPException(422, "decision: APPROVED or REJECTED")
        try:
            result = await reads.page(
                rt(request).db, reads.SIGNALS, {"decision": decision or None}, limit=PAGE_SIZE, cursor=cursor
            )
        except reads.BadCursor as error:
            raise HTTPException(422, f"cursor: {error}") from None
        return page(request, "signals.html", session, signals=result, decision=decision or "")

    @app.get("/signals/{signal_id}", response_class=HTMLResponse)
    async def signal_trace(request: Request, signal_id: str) -> HTMLResponse:
        session = await session_of(request)
        runtime = rt(request)
        found = await reads.one(runtime.db, reads.SIGNALS, signal_id[:100])
        if found is None:
            raise HTTPException(404, "no such signal")
        trace: dict[str, Any] | None = None
        error = None
        try:
            trace = await runtime.trace(found["signal_id"], found["received_at"])
        except Exception as failure:  # the broker is down: the stored part still shows
            error = f"{type(failure).__name__}: {failure}"[:300]
        return page(request, "trace.html", session, signal=found, trace=trace, trace_error=error)

    @app.get("/risk", response_class=HTMLResponse)
    async def risk(request: Request) -> HTMLResponse:
        session = await session_of(request)
        runtime = rt(request)
        rejections = await reads.rejections_by_reason(runtime.db)
        by_hour: dict[Any, int] = {}
        reasons: dict[str, int] = {}
        for row in rejections:
            by_hour[row["hour"]] = by_hour.get(row["hour"], 0) + row["count"]
            reasons[row["reason"]] = reasons.get(row["reason"], 0) + row["count"]
        account = await reads.account(runtime.db, runtime.redis, settings.risk.starting_equity)
        sizing = await reads.recent_sizing(runtime.db)
        compliance = await reads.compliance_now(runtime.db, runtime.redis)
        return page(
            request,
            "risk.html",
            session,
            compliance=compliance,
            protections=settings.compliance,
            rejections=rejections,
            reasons=sorted(reasons.items(), key=lambda item: -item[1]),
            rejection_chart=charts.bar_chart(
                [(f"{hour:%d %H:00}", count) for hour, count in sorted(by_hour.items())],
                chart_id="rejections",
                title="Rejections per hour",
            ),
            kelly_chart=charts.bar_chart(
                [(f"{v['decided_at']:%H:%M}", float(v["position_fraction"] or 0) * 100) for v in reversed(sizing)],
                chart_id="kelly-sizes",
                title="Position fraction (Kelly-sized) of recent approvals",
                unit=" %",
            ),
            sizing=sizing,
            account=account,
        )

    @app.get("/backtests", response_class=HTMLResponse)
    async def backtests(request: Request, cursor: str | None = None) -> HTMLResponse:
        session = await session_of(request)
        try:
            result = await reads.page(rt(request).db, reads.REPLAYS, {}, limit=PAGE_SIZE, cursor=cursor)
        except reads.BadCursor as error:
            raise HTTPException(422, f"cursor: {error}") from None
        from phoenix95.data import market

        candles = sorted(p.name for p in Path(market.__file__).parent.glob("*.csv.gz"))
        return page(request, "backtests.html", session, reports=result, candles=candles, error=None)

    @app.post("/backtests", response_class=HTMLResponse)
    async def start_backtest(
        request: Request,
        csrf: str | None = Form(None),
        prices: str = Form(""),
        overrides: str = Form(""),
        signals_file: UploadFile | None = None,
    ) -> Response:
        session = await session_of(request)
        check_csrf(request, session, csrf)
        if not session.principal.can_operate:
            raise HTTPException(403, "starting a replay needs the operator role")
        from phoenix95.data import market
        from phoenix95.replay.runner import sample_signals_path

        known = {p.name for p in Path(market.__file__).parent.glob("*.csv.gz")}
        if prices and prices not in known:
            raise HTTPException(422, "prices: not a bundled candle file")
        lines = [line.strip() for line in overrides.splitlines() if line.strip()][:20]
        runtime = rt(request)
        path = str(sample_signals_path())
        name = "sample"
        if signals_file is not None and signals_file.filename:
            import tempfile

            data = await signals_file.read(2_000_001)
            if len(data) > 2_000_000:
                raise HTTPException(413, "signals file: at most 2 MB")
            suffix = ".csv" if signals_file.filename.lower().endswith(".csv") else ".jsonl"
            with tempfile.NamedTemporaryFile("wb", suffix=suffix, delete=False, prefix="p95-replay-") as handle:
                handle.write(data)
            path, name = handle.name, signals_file.filename[:100]
        try:
            await runtime.start_replay(
                session.principal,
                request.client.host if request.client else None,
                signals_file=path,
                prices=[prices] if prices else [],
                overrides=lines,
                source_name=name,
            )
        except ValueError as error:
            raise HTTPException(422, f"overrides: {error}") from None
        return RedirectResponse("/backtests", status_code=303)

    @app.get("/backtests/{report_id}", response_class=HTMLResponse)
    async def backtest_report(request: Request, report_id: str) -> Response:
        await session_of(request)
        found = await reads.replay_report(rt(request).db, report_id[:40])
        if found is None or not found.get("html"):
            raise HTTPException(404, "no such report (or it is still running)")
        return HTMLResponse(
            found["html"],
            headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:"},
        )

    # -- actions and live updates ------------------------------------------------------------------------

    @app.post("/state", response_class=HTMLResponse)
    async def change_state(
        request: Request, action: str = Form(...), reason: str = Form(""), csrf: str | None = Form(None)
    ) -> HTMLResponse:
        session = await session_of(request)
        check_csrf(request, session, csrf)
        if not session.principal.can_operate:
            raise HTTPException(403, "halt, reduce and resume need the operator role")
        if action not in STATES:
            raise HTTPException(422, "action: halt, reduce or resume")
        runtime = rt(request)
        reason = reason.strip()[:200] or f"dashboard {action}"
        await runtime.set_trading_state(
            STATES[action], reason, session.principal, request.client.host if request.client else None
        )
        return HTMLResponse(render_fragment("_state.html", await _state(runtime)))

    @app.get("/events")
    async def events(request: Request) -> Response:
        await session_of(request)
        from sse_starlette.sse import EventSourceResponse

        last = request.headers.get("last-event-id")
        return EventSourceResponse(
            live.events(rt(request), last, request.is_disconnected),
            ping=int(settings.dashboard.heartbeat_s),
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # /health (ready with PostgreSQL and Redis, live) and /metrics, like every long-running component
    from prometheus_client import REGISTRY

    from phoenix95.monitoring.health import Health, add_health_routes, dependency_checks

    add_health_routes(app, Health("dashboard", dependency_checks(settings, "postgres", "redis")), metrics=REGISTRY)
    return app


def _csv_cell(value: Any) -> Any:
    """Keep a spreadsheet from running a cell as a formula."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@") and not _is_number(value):
        return "'" + value
    return value


def _is_number(text: str) -> bool:
    try:
        Decimal(text)
        return True
    except ArithmeticError:
        return False
    except ValueError:
        return False


async def _state(runtime: Runtime) -> dict[str, Any]:
    rows = await runtime.db.fetch("SELECT state, reason, updated_by, updated_at FROM trading_state WHERE id = 1")
    if not rows:
        return {"state": "ACTIVE", "reason": None, "updated_by": None, "updated_at": None}
    state, reason, updated_by, updated_at = rows[0]
    return {"state": state, "reason": reason, "updated_by": updated_by, "updated_at": updated_at}
