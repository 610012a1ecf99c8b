"""The reads behind the API and the dashboard: keyset-paginated lists (newest first) and the account,
overview and risk figures. Every query is fixed SQL; user input only ever arrives as a bound parameter
(filters are looked up in a table of allowed ones, never spliced in)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from psycopg import sql
from psycopg.rows import dict_row

from phoenix95.storage.postgres import Database
from phoenix95.storage.redis_state import RedisState


class BadCursor(ValueError):
    pass


@dataclass(frozen=True)
class Listing:
    """One paginated list: FROM clause, columns, the (time, id) it is ordered by and its filters."""

    name: str
    select: str
    time_column: str
    id_column: str
    id_type: str
    #: filter name -> SQL condition with one %s placeholder
    filters: dict[str, str] = field(default_factory=dict)
    fixed: str | None = None


SIGNALS = Listing(
    "signals",
    """SELECT s.signal_id, s.received_at, s.symbol, s.action, s.price, s.confidence, s.strategy, s.timeframe,
              s.source, s.phoenix95_score, s.final_confidence, v.verdict_id, v.decision, v.reasons, v.details,
              v.trading_state, v.decided_at
         FROM signals s
         LEFT JOIN LATERAL (SELECT rv.verdict_id::text AS verdict_id, rv.decision, rv.reasons, rv.details,
                                   rv.trading_state, rv.decided_at
                              FROM risk_verdicts rv WHERE rv.signal_id = s.signal_id
                             ORDER BY rv.decided_at DESC LIMIT 1) v ON TRUE""",
    "s.received_at",
    "s.signal_id",
    "text",
    {
        "symbol": "s.symbol = %s",
        "strategy": "s.strategy = %s",
        "action": "s.action = %s",
        "decision": "v.decision = %s",
        "reason": "%s = ANY(v.reasons)",
        "since": "s.received_at >= %s",
        "until": "s.received_at < %s",
    },
)
VERDICTS = Listing(
    "verdicts",
    """SELECT verdict_id::text, decided_at, signal_id, symbol, side, decision, intent, close_position_id::text,
              reasons, details, trading_state, signal_time, price, confidence, phoenix95_score, final_confidence,
              entry_price, stop_loss_price, take_profit_price, liquidation_price, quantity, notional,
              initial_margin, leverage, kelly, kelly_fraction, position_fraction, equity, free_margin, var_1d_95
         FROM risk_verdicts""",
    "decided_at",
    "verdict_id",
    "uuid",
    {
        "symbol": "symbol = %s",
        "decision": "decision = %s",
        "reason": "%s = ANY(reasons)",
        "signal_id": "signal_id = %s",
        "since": "decided_at >= %s",
        "until": "decided_at < %s",
    },
)
ORDERS = Listing(
    "orders",
    """SELECT order_id::text, submitted_at, client_order_id, verdict_id::text, signal_id, symbol, side,
              position_side, intent, close_position_id::text, order_type, quantity, status, reject_reason,
              requested_price, leverage, margin_mode, exchange, exchange_order_id, fill_price, fill_quantity,
              fill_notional, fee, slippage_rate, filled_at
         FROM orders""",
    "submitted_at",
    "order_id",
    "uuid",
    {
        "symbol": "symbol = %s",
        "status": "status = %s",
        "intent": "intent = %s",
        "signal_id": "signal_id = %s",
        "since": "submitted_at >= %s",
        "until": "submitted_at < %s",
    },
)
TRADES = Listing(
    "trades",
    """SELECT trade_id::text, created_at, signal_id, order_id::text, symbol, side, leverage, margin_mode,
              quantity, margin_required, entry_price, exit_price, stop_loss_price, take_profit_price,
              liquidation_price, trading_fee_amount, status, close_reason, realized_pnl, roe_percent,
              order_filled_at, position_closed_at
         FROM trades""",
    "created_at",
    "trade_id",
    "uuid",
    {
        "symbol": "symbol = %s",
        "status": "status = %s",
        "signal_id": "signal_id = %s",
        "since": "created_at >= %s",
        "until": "created_at < %s",
    },
)
_POSITION_SELECT = """SELECT position_id::text, opened_at, closed_at, signal_id, symbol, side, status, leverage,
              margin_mode, quantity, entry_price, mark_price, current_price, exit_price, margin_used,
              liquidation_price, stop_loss_price, take_profit_price, unrealized_pnl, roe, realized_pnl,
              total_fees_paid, funding_paid, distance_to_liquidation, risk_level, close_reason,
              last_price_update
         FROM positions"""
_POSITION_FILTERS = {
    "symbol": "symbol = %s",
    "side": "side = %s",
    "close_reason": "close_reason = %s",
    "signal_id": "signal_id = %s",
}
OPEN_POSITIONS = Listing(
    "positions-open",
    _POSITION_SELECT,
    "opened_at",
    "position_id",
    "uuid",
    {**_POSITION_FILTERS, "since": "opened_at >= %s", "until": "opened_at < %s"},
    fixed="status = 'open'",
)
CLOSED_POSITIONS = Listing(
    "positions-closed",
    _POSITION_SELECT,
    "closed_at",
    "position_id",
    "uuid",
    {**_POSITION_FILTERS, "since": "closed_at >= %s", "until": "closed_at < %s"},
    fixed="status <> 'open'",
)
ALL_POSITIONS = Listing(
    "positions",
    _POSITION_SELECT,
    "opened_at",
    "position_id",
    "uuid",
    {**_POSITION_FILTERS, "since": "opened_at >= %s", "until": "opened_at < %s"},
)
DEAD_LETTERS = Listing(
    "dead-letters",
    """SELECT event_id::text, dead_at, correlation_id, stage, reason, error, source_topic, source_partition,
              source_offset, source_timestamp, replay_count, replayed_at
         FROM dead_letters""",
    "dead_at",
    "event_id",
    "uuid",
    {"stage": "stage = %s", "reason": "reason = %s", "since": "dead_at >= %s", "until": "dead_at < %s"},
)
REPLAYS = Listing(
    "replays",
    """SELECT report_id::text, created_at, finished_at, actor, status, request, summary, error
         FROM replay_reports""",
    "created_at",
    "report_id",
    "uuid",
    {"status": "status = %s"},
)


# -- cursors -------------------------------------------------------------------------------------------


def encode_cursor(listing: Listing, at: datetime, ident: str) -> str:
    raw = json.dumps([listing.name, at.isoformat(), ident], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(listing: Listing, cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        name, at, ident = json.loads(raw)
        when = datetime.fromisoformat(at)
        if name != listing.name or not isinstance(ident, str):
            raise BadCursor("the cursor belongs to another list")
        if listing.id_type == "uuid":
            UUID(ident)
        return when, ident
    except BadCursor:
        raise
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as error:
        raise BadCursor("not a cursor this API returned") from error


@dataclass
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


async def fetch_dicts(db: Database, query: sql.Composable | str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    async with db.pool.connection() as connection, connection.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(query, params)  # type: ignore[arg-type]
        return list(await cursor.fetchall()) if cursor.description else []


async def page(
    db: Database, listing: Listing, filters: dict[str, Any], *, limit: int, cursor: str | None = None
) -> Page:
    """One page of `listing`, newest first, after `cursor`; `filters` keys must be listing filters."""
    conditions: list[sql.Composable] = []
    params: list[Any] = []
    if listing.fixed:
        conditions.append(sql.SQL(listing.fixed))
    for name, value in filters.items():
        if value is None:
            continue
        conditions.append(sql.SQL(listing.filters[name]))  # KeyError: a programming error, not user input
        params.append(value)
    if cursor:
        at, ident = decode_cursor(listing, cursor)
        conditions.append(
            sql.SQL("({}, {}) < (%s, %s::{})").format(
                sql.SQL(listing.time_column), sql.SQL(listing.id_column), sql.SQL(listing.id_type)
            )
        )
        params.extend([at, ident])
    where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("")
    query = sql.SQL("{} {} ORDER BY {} DESC, {} DESC LIMIT %s").format(
        sql.SQL(listing.select), where, sql.SQL(listing.time_column), sql.SQL(listing.id_column)
    )
    params.append(limit + 1)
    rows = await fetch_dicts(db, query, params)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more and rows:
        time_key = listing.time_column.split(".")[-1]
        id_key = listing.id_column.split(".")[-1]
        next_cursor = encode_cursor(listing, rows[-1][time_key], str(rows[-1][id_key]))
    return Page(rows, next_cursor)


async def one(db: Database, listing: Listing, ident: str) -> dict[str, Any] | None:
    if listing.id_type == "uuid":
        try:
            UUID(ident)
        except ValueError:
            return None
    query = sql.SQL("{} WHERE {} = %s::{}").format(
        sql.SQL(listing.select), sql.SQL(listing.id_column), sql.SQL(listing.id_type)
    )
    rows = await fetch_dicts(db, query, (ident,))
    return rows[0] if rows else None


# -- JSON ------------------------------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """JSON-ready: money stays exact (Decimal as text), times ISO-8601, ids text."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    return value


# -- live positions (PostgreSQL rows with their latest state from Redis) ------------------------------

_LIVE_FIELDS = ("mark_price", "current_price", "unrealized_pnl", "roe", "distance_to_liquidation", "risk_level")


async def open_positions(db: Database, redis: RedisState) -> list[dict[str, Any]]:
    rows = await fetch_dicts(db, _POSITION_SELECT + " WHERE status = 'open' ORDER BY opened_at DESC, position_id")
    await overlay_live(redis, rows)
    return rows


async def overlay_live(redis: RedisState, rows: list[dict[str, Any]]) -> None:
    """The newest marks of open positions are in Redis (PostgreSQL gets them batched)."""
    if not rows:
        return
    pipe = redis.client.pipeline(transaction=False)
    for row in rows:
        pipe.hgetall(redis.keys.position(row["position_id"]))
    states = await pipe.execute()
    for row, state in zip(rows, states, strict=True):
        live = {_text(k): _text(v) for k, v in (state or {}).items()}
        if not live or live.get("status") not in (None, "open"):
            continue
        for name in _LIVE_FIELDS:
            value = live.get(name)
            if value in (None, ""):
                continue
            row[name] = value if name == "risk_level" else Decimal(value)
        if live.get("last_updated"):
            row["last_price_update"] = datetime.fromisoformat(live["last_updated"])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- account, overview, risk ---------------------------------------------------------------------------


async def account(db: Database, redis: RedisState, starting_equity: Decimal) -> dict[str, Any]:
    positions = await open_positions(db, redis)
    [totals] = await fetch_dicts(
        db,
        """SELECT a.realized_pnl, a.closed_positions, r.fees_paid, r.funding_paid
             FROM paper_account a, paper_account_realized r""",
    )
    realized = Decimal(totals["realized_pnl"])
    unrealized = sum((Decimal(p["unrealized_pnl"] or 0) for p in positions), Decimal(0))
    exposure: dict[str, dict[str, Decimal]] = {}
    for p in positions:
        mark = Decimal(p["mark_price"] or p["entry_price"])
        notional = Decimal(p["quantity"]) * mark
        entry = exposure.setdefault(p["symbol"], {"long": Decimal(0), "short": Decimal(0), "margin": Decimal(0)})
        entry[p["side"]] += notional
        entry["margin"] += Decimal(p["margin_used"])
    for entry in exposure.values():
        entry["net"] = entry["long"] - entry["short"]
        entry["gross"] = entry["long"] + entry["short"]
    day = await today(db)
    return {
        "starting_equity": starting_equity,
        "equity": starting_equity + realized + unrealized,
        "realized_pnl": realized,
        "unrealized_pnl": unrealized,
        "fees": Decimal(totals["fees_paid"]),
        "funding": Decimal(totals["funding_paid"]),
        "closed_positions": totals["closed_positions"],
        "open_positions": len(positions),
        "margin_in_use": sum((Decimal(p["margin_used"]) for p in positions), Decimal(0)),
        "exposure": exposure,
        "day": day["day"],
        "day_realized_pnl": day["realized_pnl"],
        "day_pnl": day["realized_pnl"] + unrealized,
    }


async def today(db: Database) -> dict[str, Any]:
    """The realized PnL of "today": the UTC day of the newest position event (event time: a replay of
    2021 candles has its own today)."""
    rows = await db.fetch(
        """SELECT GREATEST((SELECT closed_at FROM positions WHERE status <> 'open' ORDER BY closed_at DESC LIMIT 1),
                           (SELECT MAX(last_price_update) FROM positions WHERE status = 'open'))"""
    )
    newest = rows[0][0] or datetime.now(UTC)
    start = newest.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    [(realized,)] = await db.fetch(
        "SELECT COALESCE(SUM(realized_pnl), 0) FROM positions WHERE status <> 'open' AND closed_at >= %s", (start,)
    )
    return {"day": start.date().isoformat(), "realized_pnl": Decimal(realized)}


async def equity_curve(db: Database, starting_equity: Decimal, points: int = 240) -> list[tuple[datetime, Decimal]]:
    """Equity after each close (realized), thinned to about `points` points (always keeping the last)."""
    rows = await db.fetch(
        """SELECT closed_at, total FROM (
               SELECT closed_at, SUM(realized_pnl) OVER w AS total, row_number() OVER w AS n, COUNT(*) OVER () AS size
                 FROM positions WHERE status <> 'open' AND closed_at IS NOT NULL
               WINDOW w AS (ORDER BY closed_at, position_id)) AS curve
            WHERE n %% GREATEST(1, size / %s) = 0 OR n = size OR n = 1
            ORDER BY closed_at""",
        (points,),
    )
    return [(at, starting_equity + Decimal(total or 0)) for at, total in rows]


async def dead_letters_since(db: Database, window: timedelta) -> int:
    [(count,)] = await db.fetch(
        """SELECT COUNT(*) FROM dead_letters
            WHERE dead_at >= GREATEST(NOW(), (SELECT MAX(dead_at) FROM dead_letters)) - %s""",
        (window,),
    )
    return int(count)


async def workers_alive(redis: RedisState) -> list[str]:
    """Stages whose worker reported its metrics within redis.metrics_ttl_s (the key expires). One
    EXISTS per registered stage, not a SCAN (the keyspace may be large)."""
    from phoenix95.streams.stages import STAGES

    pipe = redis.client.pipeline(transaction=False)
    for stage in STAGES:
        pipe.exists(redis.keys.metrics(stage))
    found = await pipe.execute()
    return [stage for stage, exists in zip(STAGES, found, strict=True) if exists]


async def rejections_by_reason(db: Database, window: timedelta = timedelta(hours=24)) -> list[dict[str, Any]]:
    return await fetch_dicts(
        db,
        """SELECT date_trunc('hour', decided_at) AS hour, reason, COUNT(*) AS count
             FROM risk_verdicts, unnest(reasons) AS reason
            WHERE decision = 'REJECTED'
              AND decided_at >= (SELECT decided_at FROM risk_verdicts WHERE decision = 'REJECTED'
                                  ORDER BY decided_at DESC LIMIT 1) - %s
            GROUP BY 1, 2 ORDER BY 1, 2""",
        (window,),
    )


async def recent_sizing(db: Database, limit: int = 30) -> list[dict[str, Any]]:
    return await fetch_dicts(
        db,
        """SELECT verdict_id::text, decided_at, symbol, side, kelly, kelly_fraction, position_fraction, notional,
                  initial_margin, leverage, equity, free_margin, var_1d_95
             FROM risk_verdicts WHERE decision = 'APPROVED' ORDER BY decided_at DESC, verdict_id DESC LIMIT %s""",
        (limit,),
    )


async def signal_received_at(db: Database, signal_id: str) -> datetime | None:
    rows = await db.fetch("SELECT MIN(received_at) FROM signals WHERE signal_id = %s", (signal_id,))
    return rows[0][0] if rows else None


async def replay_report(db: Database, report_id: str) -> dict[str, Any] | None:
    try:
        UUID(report_id)
    except ValueError:
        return None
    rows = await fetch_dicts(
        db,
        """SELECT report_id::text, created_at, finished_at, actor, status, request, summary, error, html
             FROM replay_reports WHERE report_id = %s""",
        (report_id,),
    )
    return rows[0] if rows else None


async def compliance_now(db: Database, redis: RedisState, *, trips: int = 20) -> dict[str, Any]:
    """The compliance monitor as of now: its book figures (Redis; None while no monitor has run),
    the symbol locks in force and the latest protection trips."""
    try:
        figures = await redis.compliance_figures()
    except Exception:  # a view: the figures are left out, never the rest
        figures = None
    locks = await fetch_dicts(
        db,
        """SELECT symbol, reason, until, detail, locked_by, trip_id FROM protection_locks
            WHERE until > NOW() ORDER BY symbol""",
    )
    latest = await fetch_dicts(
        db,
        "SELECT trip_id, reason, at, subject, message FROM protection_trips ORDER BY at DESC LIMIT %s",
        (trips,),
    )
    return {"figures": figures, "locks": locks, "trips": latest}
