"""`p95 api`: the REST API (FastAPI, OpenAPI at /docs).

Every call carries an API key (`X-API-Key: p95_k..._...` or `Authorization: Bearer ...`): 401 without a
valid one, 403 when a viewer key asks for an operator action, 429 with Retry-After past the key's
per-minute budget (Redis counter `s4:rate_limit:{key id}:{minute}`). Lists are newest first with
cursor pagination (`limit`, `cursor` -> `next_cursor`). Money is exact decimal text.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from phoenix95.api import reads
from phoenix95.api.runtime import Runtime, minute_now
from phoenix95.api.security import Principal
from phoenix95.domain.trading_state import TradingState
from phoenix95.settings import Settings

SYMBOL = r"^[A-Z0-9]{2,20}$"
TOKEN = r"^[A-Za-z0-9_.:@-]{1,100}$"
REASON = r"^[A-Z_]{2,40}$"


def field_error(field: str, message: str, where: str = "query") -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors, naming the field."""
    return HTTPException(422, detail=[{"loc": [where, field], "msg": message, "type": "value_error"}])


def runtime_of(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


async def authenticate(request: Request) -> Principal:
    runtime = runtime_of(request)
    key = request.headers.get("x-api-key")
    authorization = request.headers.get("authorization", "")
    if not key and authorization.lower().startswith("bearer "):
        key = authorization[7:].strip()
    if not key:
        raise HTTPException(401, "an API key is required (X-API-Key header)", headers={"WWW-Authenticate": "Bearer"})
    from phoenix95.api.accounts import principal_for_key

    principal = await principal_for_key(runtime.db, key)
    if principal is None:
        raise HTTPException(401, "unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"})
    minute, retry_after = minute_now()
    allowed, _ = await runtime.redis.hit_rate_limit(principal.name, minute, runtime.settings.api.rate_limit_per_minute)
    if not allowed:
        raise HTTPException(
            429,
            f"rate limit of {runtime.settings.api.rate_limit_per_minute} requests per minute reached",
            headers={"Retry-After": str(retry_after)},
        )
    return principal


async def operator(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    if not principal.can_operate:
        raise HTTPException(403, "this needs an operator key")
    return principal


Viewer = Annotated[Principal, Depends(authenticate)]
Operator = Annotated[Principal, Depends(operator)]


def pagination(
    request: Request,
    limit: Annotated[int, Query(ge=1, description="Page size (at most api.max_page_size, 500).")] = 50,
    cursor: Annotated[str | None, Query(max_length=400, description="`next_cursor` of the previous page.")] = None,
) -> tuple[int, str | None]:
    most = runtime_of(request).settings.api.max_page_size
    if limit > most:
        raise field_error("limit", f"at most {most} per page")
    return limit, cursor


Paging = Annotated[tuple[int, str | None], Depends(pagination)]
Since = Annotated[datetime | None, Query(description="From this time (ISO-8601), inclusive.")]
Until = Annotated[datetime | None, Query(description="Up to this time, exclusive.")]
Symbol = Annotated[str | None, Query(pattern=SYMBOL)]


def paged(result: reads.Page) -> JSONResponse:
    return JSONResponse({"items": reads.plain(result.items), "next_cursor": result.next_cursor})


async def list_page(
    runtime: Runtime, listing: reads.Listing, filters: dict[str, Any], paging: tuple[int, str | None]
) -> JSONResponse:
    limit, cursor = paging
    try:
        return paged(await reads.page(runtime.db, listing, filters, limit=limit, cursor=cursor))
    except reads.BadCursor as error:
        raise field_error("cursor", str(error)) from None


class TradingStateChange(BaseModel):
    state: Literal["ACTIVE", "REDUCING", "HALTED"]
    reason: str = Field(min_length=1, max_length=200)


class ReplayStart(BaseModel):
    signals: Literal["sample"] = "sample"
    prices: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,80}$")]] = Field(default_factory=list, max_length=5)
    set: list[Annotated[str, Field(max_length=200)]] = Field(default_factory=list, max_length=20)


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    """The API app. Without `runtime`, one is opened for the app's lifetime."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if runtime is not None:
            app.state.runtime = runtime
            yield
            return
        app.state.runtime = await Runtime.start(settings)
        try:
            yield
        finally:
            await app.state.runtime.stop()

    app = FastAPI(
        title="Phoenix95 API",
        version="1",
        description=__doc__,
        lifespan=lifespan,
    )
    if runtime is not None:
        app.state.runtime = runtime

    @app.get("/health", include_in_schema=False)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/signals", tags=["signals"])
    async def signals(
        request: Request,
        _: Viewer,
        paging: Paging,
        symbol: Symbol = None,
        strategy: Annotated[str | None, Query(max_length=50)] = None,
        action: Annotated[Literal["buy", "sell", "long", "short"] | None, Query()] = None,
        decision: Annotated[Literal["APPROVED", "REJECTED"] | None, Query()] = None,
        reason: Annotated[str | None, Query(pattern=REASON)] = None,
        since: Since = None,
        until: Until = None,
    ) -> JSONResponse:
        """Signals, newest first, each with its risk verdict (decision and every reason code)."""
        filters = {"symbol": symbol, "strategy": strategy, "action": action, "decision": decision, "reason": reason}
        return await list_page(runtime_of(request), reads.SIGNALS, {**filters, "since": since, "until": until}, paging)

    @app.get("/v1/signals/{signal_id}", tags=["signals"])
    async def signal(request: Request, _: Viewer, signal_id: Annotated[str, Path(pattern=TOKEN)]) -> JSONResponse:
        found = await reads.one(runtime_of(request).db, reads.SIGNALS, signal_id)
        if found is None:
            raise HTTPException(404, f"no signal {signal_id}")
        return JSONResponse(reads.plain(found))

    @app.get("/v1/signals/{signal_id}/trace", tags=["signals"])
    async def signal_trace(request: Request, _: Viewer, signal_id: Annotated[str, Path(pattern=TOKEN)]) -> JSONResponse:
        """Where the signal went: its messages on every topic with partition and offset, and whether each
        stage's consumer group committed past them (the steps of `p95 tap --trace`)."""
        runtime = runtime_of(request)
        received_at = await reads.signal_received_at(runtime.db, signal_id)
        if received_at is None:
            raise HTTPException(404, f"no signal {signal_id}")
        return JSONResponse(await runtime.trace(signal_id, received_at))

    @app.get("/v1/verdicts", tags=["pipeline"])
    async def verdicts(
        request: Request,
        _: Viewer,
        paging: Paging,
        symbol: Symbol = None,
        decision: Annotated[Literal["APPROVED", "REJECTED"] | None, Query()] = None,
        reason: Annotated[str | None, Query(pattern=REASON)] = None,
        signal_id: Annotated[str | None, Query(pattern=TOKEN)] = None,
        since: Since = None,
        until: Until = None,
    ) -> JSONResponse:
        filters = {"symbol": symbol, "decision": decision, "reason": reason, "signal_id": signal_id}
        return await list_page(runtime_of(request), reads.VERDICTS, {**filters, "since": since, "until": until}, paging)

    @app.get("/v1/orders", tags=["pipeline"])
    async def orders(
        request: Request,
        _: Viewer,
        paging: Paging,
        symbol: Symbol = None,
        status: Annotated[Literal["filled", "rejected"] | None, Query()] = None,
        intent: Annotated[Literal["open", "close"] | None, Query()] = None,
        signal_id: Annotated[str | None, Query(pattern=TOKEN)] = None,
        since: Since = None,
        until: Until = None,
    ) -> JSONResponse:
        filters = {"symbol": symbol, "status": status, "intent": intent, "signal_id": signal_id}
        return await list_page(runtime_of(request), reads.ORDERS, {**filters, "since": since, "until": until}, paging)

    @app.get("/v1/trades", tags=["pipeline"])
    async def trades(
        request: Request,
        _: Viewer,
        paging: Paging,
        symbol: Symbol = None,
        status: Annotated[str | None, Query(pattern=r"^[a-z_]{2,20}$")] = None,
        signal_id: Annotated[str | None, Query(pattern=TOKEN)] = None,
        since: Since = None,
        until: Until = None,
    ) -> JSONResponse:
        filters = {"symbol": symbol, "status": status, "signal_id": signal_id, "since": since, "until": until}
        return await list_page(runtime_of(request), reads.TRADES, filters, paging)

    @app.get("/v1/positions", tags=["positions"])
    async def positions(
        request: Request,
        _: Viewer,
        paging: Paging,
        status: Annotated[Literal["open", "closed"] | None, Query()] = None,
        symbol: Symbol = None,
        side: Annotated[Literal["long", "short"] | None, Query()] = None,
        close_reason: Annotated[str | None, Query(pattern=r"^[a-z_]{2,30}$")] = None,
        signal_id: Annotated[str | None, Query(pattern=TOKEN)] = None,
        since: Since = None,
        until: Until = None,
    ) -> JSONResponse:
        """Positions, newest first: open ones by opening time with their latest mark (Redis), closed ones by
        closing time."""
        runtime = runtime_of(request)
        listing = {"open": reads.OPEN_POSITIONS, "closed": reads.CLOSED_POSITIONS}.get(
            status or "", reads.ALL_POSITIONS
        )
        filters = {"symbol": symbol, "side": side, "close_reason": close_reason, "signal_id": signal_id}
        limit, cursor = paging
        try:
            result = await reads.page(
                runtime.db, listing, {**filters, "since": since, "until": until}, limit=limit, cursor=cursor
            )
        except reads.BadCursor as error:
            raise field_error("cursor", str(error)) from None
        await reads.overlay_live(runtime.redis, [row for row in result.items if row["status"] == "open"])
        return paged(result)

    @app.get("/v1/positions/{position_id}", tags=["positions"])
    async def position(request: Request, _: Viewer, position_id: Annotated[str, Path(max_length=40)]) -> JSONResponse:
        runtime = runtime_of(request)
        found = await reads.one(runtime.db, reads.ALL_POSITIONS, position_id)
        if found is None:
            raise HTTPException(404, f"no position {position_id}")
        if found["status"] == "open":
            await reads.overlay_live(runtime.redis, [found])
        return JSONResponse(reads.plain(found))

    @app.get("/v1/account", tags=["account"])
    async def account(request: Request, _: Viewer) -> JSONResponse:
        """Equity (starting equity + realized + unrealized PnL), fees, funding, margin in use and the
        exposure per symbol (long, short, net and gross notional at the latest mark)."""
        runtime = runtime_of(request)
        return JSONResponse(
            reads.plain(await reads.account(runtime.db, runtime.redis, runtime.settings.risk.starting_equity))
        )

    @app.get("/v1/trading-state", tags=["trading state"])
    async def trading_state(request: Request, _: Viewer) -> JSONResponse:
        return JSONResponse(await _state(runtime_of(request)))

    @app.put("/v1/trading-state", tags=["trading state"])
    async def change_trading_state(request: Request, principal: Operator, change: TradingStateChange) -> JSONResponse:
        """Halt, reduce or resume trading (operator keys). The same path as `p95 halt`: PostgreSQL, the Redis
        mirror, and the audit log (actor `api:<key id>`, with the client address)."""
        runtime = runtime_of(request)
        await runtime.set_trading_state(
            TradingState.parse(change.state), change.reason, principal, client_address(request)
        )
        return JSONResponse(await _state(runtime))

    @app.get("/v1/compliance", tags=["compliance"])
    async def compliance(request: Request, _: Viewer) -> JSONResponse:
        """The compliance monitor now: its book figures (equity, the day's PnL, drawdown, stop-losses
        in a row, orders per minute, exposure), the symbol locks in force and the latest trips."""
        runtime = runtime_of(request)
        return JSONResponse(reads.plain(await reads.compliance_now(runtime.db, runtime.redis)))

    @app.get("/v1/compliance/report", tags=["compliance"])
    async def compliance_report(
        request: Request,
        _: Viewer,
        day: Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}-\d{2}$")] = None,
        verify: bool = True,
    ) -> JSONResponse:
        """One trading day's post-trade report (as `p95 compliance report --json`); `verify=false`
        leaves out the audit chain's check (it reads every entry)."""
        from datetime import UTC, date
        from zoneinfo import ZoneInfo

        from phoenix95.storage import audit
        from phoenix95.storage.compliance_report import day_report

        runtime = runtime_of(request)
        settings = runtime.settings
        try:
            chosen = (
                date.fromisoformat(day)
                if day
                else datetime.now(UTC).astimezone(ZoneInfo(settings.compliance.day_timezone)).date()
            )
        except ValueError:
            raise HTTPException(422, f"day {day!r}: not a date (YYYY-MM-DD)") from None
        report = await day_report(
            runtime.db,
            chosen,
            timezone=settings.compliance.day_timezone,
            limit_per_symbol=settings.risk.max_exposure_per_symbol,
            max_open_positions=settings.risk.max_open_positions,
        )
        if verify:
            chain = await audit.verify(settings.postgres_url(), settings.postgres.db_schema)
            report["audit"] = {
                "ok": chain.ok,
                "entries": chain.checked,
                "broken_at": chain.broken_at,
                "problem": chain.problem,
            }
        return JSONResponse(reads.plain(report))

    @app.get("/v1/dead-letters", tags=["pipeline"])
    async def dead_letters(
        request: Request,
        _: Viewer,
        paging: Paging,
        stage: Annotated[str | None, Query(pattern=r"^[a-z_]{2,30}$")] = None,
        reason: Annotated[str | None, Query(pattern=r"^[A-Za-z_]{2,40}$")] = None,
        since: Since = None,
        until: Until = None,
    ) -> JSONResponse:
        filters = {"stage": stage, "reason": reason, "since": since, "until": until}
        return await list_page(runtime_of(request), reads.DEAD_LETTERS, filters, paging)

    @app.get("/v1/lag", tags=["pipeline"])
    async def lag(request: Request, _: Viewer) -> JSONResponse:
        """Consumer lag per stage's group (messages and seconds) with its Burrow-style status, sampled every
        few seconds from the broker's offsets (the monitor of `p95 lag`)."""
        runtime = runtime_of(request)
        if runtime.lag is None:
            raise HTTPException(503, runtime.lag_error or "no lag sample yet", headers={"Retry-After": "5"})
        return JSONResponse({"taken_at": runtime.lag.taken_at.isoformat(), "groups": runtime.lag_rows()})

    @app.get("/v1/replays", tags=["replays"])
    async def replays(
        request: Request,
        _: Viewer,
        paging: Paging,
        status: Annotated[Literal["running", "done", "failed"] | None, Query()] = None,
    ) -> JSONResponse:
        return await list_page(runtime_of(request), reads.REPLAYS, {"status": status}, paging)

    @app.get("/v1/replays/{report_id}", tags=["replays"])
    async def replay(request: Request, _: Viewer, report_id: Annotated[str, Path(max_length=40)]) -> JSONResponse:
        found = await reads.replay_report(runtime_of(request).db, report_id)
        if found is None:
            raise HTTPException(404, f"no replay report {report_id}")
        found.pop("html", None)
        return JSONResponse(reads.plain(found))

    @app.post("/v1/replays", tags=["replays"], status_code=202)
    async def start_replay(request: Request, principal: Operator, body: ReplayStart) -> JSONResponse:
        """Start an in-process replay of the bundled sample signals (operator keys)."""
        from phoenix95.replay.runner import sample_signals_path

        runtime = runtime_of(request)
        try:
            report_id = await runtime.start_replay(
                principal,
                client_address(request),
                signals_file=str(sample_signals_path()),
                prices=body.prices,
                overrides=body.set,
                source_name=body.signals,
            )
        except ValueError as error:
            raise field_error("set", str(error), where="body") from None
        return JSONResponse({"report_id": report_id, "status": "running"}, status_code=202)

    # /health (ready with PostgreSQL and Redis, live) and /metrics, like every long-running component
    from prometheus_client import REGISTRY

    from phoenix95.monitoring.health import Health, add_health_routes, dependency_checks

    add_health_routes(app, Health("api", dependency_checks(settings, "postgres", "redis")), metrics=REGISTRY)
    return app


async def _state(runtime: Runtime) -> dict[str, Any]:
    from phoenix95.storage import queries

    rows = await runtime.db.fetch("SELECT state, reason, updated_by, updated_at FROM trading_state WHERE id = 1")
    if not rows:
        state, reason, updated_at = await queries.trading_state(runtime.db)
        return {"state": state.value, "reason": reason, "updated_by": None, "updated_at": updated_at}
    state, reason, updated_by, updated_at = rows[0]
    return {"state": state, "reason": reason, "updated_by": updated_by, "updated_at": updated_at.isoformat()}
