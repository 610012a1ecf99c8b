"""`p95 halt | reduce | resume | state`: the trading state (persisted in PostgreSQL, mirrored in
Redis, checked by the risk stage and again by the execution stage)."""

from __future__ import annotations

import asyncio
import getpass
from typing import Any

import typer

from phoenix95.domain.trading_state import TradingState


def register(app: typer.Typer) -> None:
    @app.command()
    def halt(
        reason: str = typer.Option("manual halt", help="Why (kept in the audit log)."),
        flatten: bool = typer.Option(
            False,
            "--flatten",
            help="Kill switch: also cancel every open order and close every open position at market.",
        ),
        wait: float = typer.Option(60.0, "--wait", help="With --flatten: seconds to wait until nothing is open."),
    ) -> None:
        """HALTED: no new orders at all (approved verdicts still in flight are not executed)."""
        if flatten:
            _flatten(reason, wait)
        else:
            _switch(TradingState.HALTED, reason)

    @app.command()
    def reduce(reason: str = typer.Option("manual reduce", help="Why (kept in the audit log).")) -> None:
        """REDUCING: only orders that shrink a position pass (an opposite signal closes a position)."""
        _switch(TradingState.REDUCING, reason)

    @app.command()
    def resume(reason: str = typer.Option("manual resume", help="Why (kept in the audit log).")) -> None:
        """ACTIVE: trade normally."""
        _switch(TradingState.ACTIVE, reason)

    @app.command("state")
    def show_state(as_json: bool = typer.Option(False, "--json")) -> None:
        """Show the trading state."""
        from phoenix95.cli.console import print_json, stderr

        state, reason, updated_at, locks = asyncio.run(_read())
        figures, unavailable = asyncio.run(_figures())
        if as_json:
            print_json(
                {
                    "state": state.value,
                    "reason": reason,
                    "updated_at": updated_at,
                    "locks": locks,
                    "figures": figures,
                    **({"figures_unavailable": unavailable} if unavailable else {}),
                }
            )
        else:
            stderr.print(f"{state.value} since {updated_at} ({reason})")
            for lock in locks:
                stderr.print(
                    f"  {lock['symbol']} locked by {lock['reason']} until {lock['until']} ({lock['detail']}; {lock['locked_by']})"
                )
            for line in figure_lines(figures, unavailable):
                stderr.print(line)


def figure_lines(figures: dict[str, Any] | None, unavailable: str | None) -> list[str]:
    """The compliance monitor's book figures, as `p95 state` prints them."""
    if unavailable:
        return [f"book figures: unavailable ({unavailable})"]
    if figures is None:
        return ["book figures: none yet (is `p95 worker --stage compliance` running?)"]
    exposure = ", ".join(f"{symbol} {value}" for symbol, value in figures["exposure"].items()) or "none"
    streaks = ", ".join(f"{key} {count}" for key, count in figures["stop_loss_streaks"].items()) or "none"
    return [
        f"book as of {figures['as_of']}: equity {figures['equity']}, day {figures['day']} ({figures['timezone']}) "
        f"PnL {figures['day_pnl']}, drawdown {figures['drawdown_pct']}% from peak {figures['peak_equity']}",
        f"  orders/min {figures['orders_per_minute']}; exposure {figures['total_exposure']} ({exposure}); "
        f"stop-losses in a row: {streaks}",
    ]


async def _figures() -> tuple[dict[str, Any] | None, str | None]:
    """The monitor's figures from Redis; a Redis that does not answer leaves them out, not the state."""
    from phoenix95.settings import get_settings
    from phoenix95.storage.redis_state import RedisState

    settings = get_settings()
    redis = RedisState.from_url(settings.redis_url(), prefix=settings.redis.prefix)
    try:
        return await asyncio.wait_for(redis.compliance_figures(), 3), None
    except Exception as error:
        return None, f"Redis: {type(error).__name__}"
    finally:
        await redis.close()


def _flatten(reason: str, wait: float) -> None:
    from phoenix95.cli.console import stderr
    from phoenix95.cli.flatten import flatten
    from phoenix95.settings import get_settings

    result = asyncio.run(flatten(get_settings(), actor=f"cli:{getpass.getuser()}", reason=reason, wait=wait))
    stderr.print(
        f"trading state: HALTED ({reason}); flatten: {result.cancelled_orders} open order(s) cancelled, "
        f"{len(result.closing)} position(s) closed at market (reason manual)"
    )
    if result.still_open or result.unsettled_orders:
        from phoenix95.cli.console import UserError

        raise UserError(
            f"after {wait:g}s {result.still_open} position(s) still open and {result.unsettled_orders} exchange "
            "order(s) not yet settled: are the execution and positions workers running? run it again"
        )


def _switch(state: TradingState, reason: str) -> None:
    from phoenix95.cli.console import stderr

    asyncio.run(_write(state, reason))
    stderr.print(f"trading state: {state.value} ({reason})")


async def _write(state: TradingState, reason: str) -> None:
    from phoenix95.settings import get_settings
    from phoenix95.storage import queries
    from phoenix95.storage.postgres import Database
    from phoenix95.storage.redis_state import RedisState

    settings = get_settings()
    async with Database(settings.postgres_url(), schema=settings.postgres.db_schema) as db:
        updated_at = await queries.set_trading_state(db, state, reason=reason, actor=f"cli:{getpass.getuser()}")
    redis = RedisState.from_url(settings.redis_url(), prefix=settings.redis.prefix)
    try:
        await redis.set_trading_state(state.value, reason, updated_at)
    finally:
        await redis.close()


async def _read() -> tuple[TradingState, str | None, object, list[dict[str, object]]]:
    from phoenix95.settings import get_settings
    from phoenix95.storage import queries
    from phoenix95.storage.postgres import Database

    settings = get_settings()
    async with Database(settings.postgres_url(), schema=settings.postgres.db_schema) as db:
        state, reason, updated_at = await queries.trading_state(db)
        rows = await db.fetch(
            """SELECT symbol, reason, until, detail, locked_by, trip_id FROM protection_locks
                WHERE until > NOW() ORDER BY symbol"""
        )
    locks = [
        {"symbol": r[0], "reason": r[1], "until": r[2], "detail": r[3], "locked_by": r[4], "trip_id": r[5]}
        for r in rows
    ]
    return state, reason, updated_at, locks
