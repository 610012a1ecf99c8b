"""Storage against the real PostgreSQL, Redis and time-series store: idempotent batches, migrations,
Redis rebuild."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import urllib.request
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
import redis as sync_redis
from psycopg import sql
from typer.testing import CliRunner

from phoenix95.agents.ports import (
    DeadLettered,
    OrderPlaced,
    Outcome,
    PositionChanged,
    PriceObserved,
    SignalAnalyzed,
    VerdictMade,
)
from phoenix95.cli.main import app
from phoenix95.connectors.exchange.brackets import bundled_brackets
from phoenix95.domain.config import TradingConfig
from phoenix95.domain.positions import Position
from phoenix95.stack import services as stack_services
from phoenix95.stack.processes import stop
from phoenix95.storage.postgres import Database, bundled_migrations, migrate
from phoenix95.storage.redis_state import RedisState
from phoenix95.storage.sink import StoreSink
from phoenix95.storage.timeseries import TimeseriesSink
from tests.unit.samples import samples

pytestmark = pytest.mark.integration

TABLES = ("signals", "risk_verdicts", "orders", "trades", "positions", "dead_letters")


def sample_outcomes() -> list[Outcome]:
    signal, analysis, verdict, order, tick, price, dead = samples()
    from phoenix95.agents.ports import InputRecord

    record = InputRecord("t", 0, 0, None, None, b"")
    position = _position_of(tick)
    return [
        Outcome(record, produce=[analysis], persist=[SignalAnalyzed(signal, analysis)]),
        Outcome(record, produce=[verdict], persist=[VerdictMade(verdict)]),
        Outcome(record, produce=[order], persist=[OrderPlaced(order, verdict)]),
        Outcome(record, produce=[tick], persist=[PositionChanged(tick, position)]),
        Outcome(record, persist=[PriceObserved(price)]),
        Outcome(record, dead_letter=dead, persist=[DeadLettered(dead)]),
    ]


def _position_of(tick) -> Position:
    from phoenix95.domain.execution import Fill
    from phoenix95.domain.positions import open_position

    fill = Fill(
        "buy",
        tick.entry_price,
        tick.quantity,
        tick.entry_price * tick.quantity,
        tick.entry_fee,
        0,
        tick.entry_price,
        tick.opened_at,
    )
    update = open_position(
        position_id=tick.position_id,
        order_id=tick.order_id,
        signal_id=tick.signal_id,
        symbol=tick.symbol,
        side=tick.side,
        fill=fill,
        leverage=tick.leverage,
        margin_mode=tick.margin_mode,
        brackets=bundled_brackets().for_symbol(tick.symbol),
        config=TradingConfig(),
        tick_size=Decimal("0.1"),
    )
    return update.position


def _marked(position: Position, prices: list[Decimal]) -> tuple[Position, list[Outcome]]:
    """The position marked at each price, a minute apart: its last state and one outcome per event."""
    from datetime import timedelta

    from phoenix95.agents.ports import InputRecord
    from phoenix95.domain.execution import MarketTick
    from phoenix95.domain.positions import default_funding, on_price
    from phoenix95.schemas.convert import position_message

    record = InputRecord("t", 0, 0, None, None, b"")
    config = TradingConfig()
    opened_at = position.opened_at
    states = []
    for minute, price in enumerate(prices, start=1):
        update = on_price(
            position,
            MarketTick(position.symbol, opened_at + timedelta(minutes=minute), price),
            config=config,
            tick_size=Decimal("0.1"),
            funding_rate=default_funding(config),
        )
        position = update.position
        for event in update.events:
            message = position_message(position, event, cause=str(minute), equity=None)
            states.append(Outcome(record, produce=[message], persist=[PositionChanged(message, position)]))
    return position, states


async def _counts(db: Database) -> dict[str, int]:
    counts = {}
    for table in TABLES:
        rows = await db.fetch(f"SELECT COUNT(*) FROM {table}")
        counts[table] = rows[0][0]
    return counts


def _points(influx: str, namespace: str) -> int:
    base = influx.rstrip("/")
    urllib.request.urlopen(base + "/internal/force_flush", timeout=10).read()
    query = urllib.parse.urlencode({"match[]": f'{{ns="{namespace}"}}'})
    total = 0
    with urllib.request.urlopen(f"{base}/api/v1/export?{query}", timeout=30) as response:
        for line in response:
            total += len(json.loads(line)["values"])
    return total


def test_a_batch_written_twice_leaves_one_row_per_event(services, namespace):
    async def run() -> None:
        await migrate(services.postgres, namespace.schema)
        async with Database(services.postgres, schema=namespace.schema) as db:
            redis = RedisState.from_url(services.redis, prefix=namespace.redis_prefix)
            timeseries = TimeseriesSink(services.influx, token="t", org="o", bucket="b", namespace=namespace.name)
            sink = StoreSink(db, redis, timeseries)
            try:
                outcomes = sample_outcomes()
                assert await sink.persist("test", outcomes) == []
                first = await _counts(db)
                keys_first = await redis.count_keys()
                points_first = _points(services.influx, namespace.name) if services.influx else 0
                assert await sink.persist("test", outcomes) == []  # the same batch again (a re-delivery)
                assert await _counts(db) == first
                assert await redis.count_keys() == keys_first
                if services.influx:
                    assert _points(services.influx, namespace.name) == points_first > 0
            finally:
                await redis.close()
                await timeseries.close()
        assert first == {"signals": 1, "risk_verdicts": 1, "orders": 1, "trades": 1, "positions": 1, "dead_letters": 1}

    asyncio.run(run())


def test_a_permanent_failure_is_isolated_to_its_own_input(services, namespace):
    async def run() -> None:
        await migrate(services.postgres, namespace.schema)
        async with Database(services.postgres, schema=namespace.schema) as db:
            sink = StoreSink(db, None, None)
            outcomes = sample_outcomes()
            signal, analysis = outcomes[0].persist[0].signal, outcomes[0].persist[0].analysis  # type: ignore[union-attr]
            broken = signal.model_copy(update={"timeframe": "7m"})  # violates the valid_timeframe CHECK
            outcomes.insert(0, Outcome(outcomes[0].record, persist=[SignalAnalyzed(broken, analysis)]))
            failures = await sink.persist("test", outcomes)
            assert [index for index, _ in failures] == [0]
            counts = await _counts(db)
        assert counts["risk_verdicts"] == 1 and counts["positions"] == 1

    asyncio.run(run())


def test_a_write_stuck_behind_a_lock_is_cancelled_at_its_statement_timeout_and_retried_until_it_succeeds(
    services, namespace
):
    async def run() -> None:
        await migrate(services.postgres, namespace.schema)
        retried: list[BaseException] = []
        async with (
            Database(services.postgres, schema=namespace.schema, statement_timeout=0.3) as db,
            await psycopg.AsyncConnection.connect(services.postgres) as locker,
        ):
            db.on_retry = lambda attempt, error: retried.append(error)
            sink = StoreSink(db, None, None)
            await locker.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(namespace.schema)))
            await locker.execute("LOCK TABLE positions IN EXCLUSIVE MODE")  # another session: reads only
            write = asyncio.create_task(sink.persist("test", sample_outcomes()))
            async with asyncio.timeout(30):
                while len(retried) < 3:
                    await asyncio.sleep(0.05)
            assert not write.done()
            assert all(isinstance(error, psycopg.errors.QueryCanceled) for error in retried), retried
            # One transaction per batch: while its positions row waits, none of its rows is visible.
            assert set((await _counts(db)).values()) == {0}
            await locker.rollback()  # the lock is gone
            assert await asyncio.wait_for(write, 30) == []
            assert await _counts(db) == dict.fromkeys(TABLES, 1)

    asyncio.run(run())


def test_migrate_twice_changes_nothing_and_concurrent_migrations_do_not_fail(services, namespace):
    async def objects(db: Database) -> int:
        rows = await db.fetch(
            "SELECT COUNT(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s",
            (namespace.schema,),
        )
        return rows[0][0]

    async def run() -> None:
        results = await asyncio.gather(*(migrate(services.postgres, namespace.schema) for _ in range(3)))
        # one of them applied every migration, the others found nothing to do
        assert sorted(len(r) for r in results) == [0, 0, len(bundled_migrations())]
        async with Database(services.postgres, schema=namespace.schema) as db:
            before = await objects(db)
            migrations = await db.fetch("SELECT version, applied_at FROM schema_migrations")
            assert await migrate(services.postgres, namespace.schema) == []
            assert await objects(db) == before
            assert await db.fetch("SELECT version, applied_at FROM schema_migrations") == migrations

    asyncio.run(run())
    result = CliRunner().invoke(app, ["db", "migrate"])
    assert result.exit_code == 0 and "up to date" in result.output


def test_redis_rebuild_after_flushall_restores_the_active_positions(services, namespace, tmp_path: Path, monkeypatch):
    # A Redis of its own: FLUSHALL must not touch anybody else's keys.
    endpoint = stack_services.start_redis(tmp_path, preferred_port=0)
    monkeypatch.setenv("P95_REDIS__URL", endpoint.url or "")
    from phoenix95.settings import get_settings

    get_settings.cache_clear()
    try:
        asyncio.run(_write_positions(services.postgres, namespace, endpoint.url or ""))
        client = sync_redis.Redis.from_url(endpoint.url or "")
        active_key = f"{namespace.redis_prefix}positions:active"
        before = client.smembers(active_key)
        assert len(before) == 1
        client.flushall()
        assert client.smembers(active_key) == set()
        result = CliRunner().invoke(app, ["redis", "rebuild"])
        assert result.exit_code == 0, result.output
        assert client.smembers(active_key) == before
        position_id = next(iter(before)).decode()
        restored = client.hgetall(f"{namespace.redis_prefix}position:{position_id}:realtime")
        assert restored[b"status"] == b"open" and restored[b"symbol"] == b"BTCUSDT"
        assert client.hget(f"{namespace.redis_prefix}trading_state", "state") == b"ACTIVE"
        client.close()
    finally:
        stop(endpoint.pid, expect=endpoint.expect)
        get_settings.cache_clear()


async def _write_positions(postgres: str, namespace, redis_url: str) -> None:
    await migrate(postgres, namespace.schema)
    async with Database(postgres, schema=namespace.schema) as db:
        redis = RedisState.from_url(redis_url, prefix=namespace.redis_prefix)
        try:
            assert await StoreSink(db, redis, None).persist("test", sample_outcomes()) == []
        finally:
            await redis.close()


def test_large_batches_go_through_copy_and_keep_the_latest_state_of_each_position(services, namespace):
    from phoenix95.agents.ports import InputRecord
    from phoenix95.bench.sinks import signal_facts
    from phoenix95.storage.postgres import COPY_THRESHOLD

    record = InputRecord("t", 0, 0, None, None, b"")
    base = sample_outcomes()
    opened = _position_of(base[3].produce[0])
    # drifting up, below the take-profit
    position, states = _marked(opened, [opened.entry_price + minute for minute in range(1, 3 * COPY_THRESHOLD)])
    signals = [Outcome(record, persist=[fact]) for fact in signal_facts(2 * COPY_THRESHOLD)]
    batch = [*base[:3], *signals, *states]

    async def run() -> None:
        await migrate(services.postgres, namespace.schema)
        async with Database(services.postgres, schema=namespace.schema) as db:
            sink = StoreSink(db, None, None)
            for _ in range(2):
                assert await sink.persist("test", batch) == []
                counts = await _counts(db)
                assert counts["signals"] == 1 + 2 * COPY_THRESHOLD
                assert counts["positions"] == 1
                rows = await db.fetch("SELECT current_price, last_price_update, status FROM positions")
                assert (
                    rows[0][0] == position.last_price
                    and rows[0][1] == position.last_event_time
                    and rows[0][2] == "open"
                )

    asyncio.run(run())


@pytest.mark.parametrize("padding", [0, 40], ids=["row-by-row", "copy"])
def test_the_paper_account_counts_a_closed_position_once_however_often_it_is_written(services, namespace, padding):

    base = sample_outcomes()
    opened = _position_of(base[3].produce[0])
    # drifting up below the take-profit, then a crash through the stop-loss
    prices = [opened.entry_price + minute for minute in range(1, padding + 1)] + [opened.stop_loss_price - 100]
    position, states = _marked(opened, prices)
    assert not position.is_open and position.realized_pnl < 0

    async def run() -> None:
        await migrate(services.postgres, namespace.schema)
        async with Database(services.postgres, schema=namespace.schema) as db:
            sink = StoreSink(db, None, None)
            # opened in one batch, closed in the next, and everything re-delivered twice
            for batch in (base[:4], [*base[:3], *states], base[:4], [*base[:3], *states]):
                assert await sink.persist("test", batch) == []
            account = await db.fetch("SELECT realized_pnl, closed_positions FROM paper_account")
            view = await db.fetch("SELECT realized_pnl, closed_positions FROM paper_account_realized")
            assert account == view == [(position.realized_pnl, 1)]

    asyncio.run(run())


def test_a_copy_batch_that_overlaps_rows_already_written_writes_only_the_new_ones(services, namespace):
    """The direct COPY of an insert-only batch meets rows already there (a re-delivery that grew):
    its transaction is rolled back, with the batch's other writes, and the batch is written again
    the upsert way: just the missing rows, once, and the other writes once."""
    from phoenix95.agents.ports import InputRecord
    from phoenix95.bench.sinks import signal_facts
    from phoenix95.storage.postgres import COPY_THRESHOLD

    record = InputRecord("t", 0, 0, None, None, b"")
    facts = signal_facts(4 * COPY_THRESHOLD)
    first, everything = facts[: 2 * COPY_THRESHOLD], facts
    verdict = sample_outcomes()[1]

    async def run() -> None:
        await migrate(services.postgres, namespace.schema)
        async with Database(services.postgres, schema=namespace.schema) as db:
            sink = StoreSink(db, None, None)
            assert await sink.persist("test", [Outcome(record, persist=[f]) for f in first]) == []
            again = [Outcome(record, persist=[f]) for f in everything] + [verdict]
            assert await sink.persist("test", again) == []
            rows = await db.fetch("SELECT signal_id, COUNT(*) FROM signals GROUP BY signal_id")
            assert len(rows) == len(everything) and {count for _, count in rows} == {1}
            assert {signal_id for signal_id, _ in rows} == {f.signal.signal_id for f in everything}
            assert (await db.fetch("SELECT COUNT(*) FROM risk_verdicts"))[0][0] == 1

    asyncio.run(run())


def test_a_row_that_cannot_be_built_while_copy_streams_fails_only_its_own_input(services, namespace):
    """Rows are built while COPY streams them: one whose building raises aborts that COPY, and the
    batch is isolated input by input: that input fails, every other row is written once."""
    from phoenix95.bench.sinks import signal_facts
    from phoenix95.storage.postgres import COPY_THRESHOLD, PgWrite
    from phoenix95.storage.tables import signals as signal_table

    facts = signal_facts(3 * COPY_THRESHOLD)
    broken = facts[COPY_THRESHOLD + 1]

    def build(fact: SignalAnalyzed) -> tuple:
        if fact is broken:
            raise ValueError("cannot build this row")
        return signal_table.signal_params(fact)

    async def run() -> None:
        await migrate(services.postgres, namespace.schema)
        async with Database(services.postgres, schema=namespace.schema) as db:
            failures = await db.write([[PgWrite.of(signal_table.SIGNAL, build, fact)] for fact in facts])
            assert [(index, str(error)) for index, error in failures] == [(COPY_THRESHOLD + 1, "cannot build this row")]
            rows = await db.fetch("SELECT signal_id FROM signals")
        assert sorted(r[0] for r in rows) == sorted(f.signal.signal_id for f in facts if f is not broken)

    asyncio.run(run())


def test_a_signal_whose_raw_copy_is_not_json_is_kept_wrapped_instead_of_failing(services, namespace):
    from phoenix95.agents.ports import InputRecord

    signal, analysis, *_ = samples()
    odd = signal.model_copy(update={"raw": "close=65000 action=buy (not JSON)"})
    record = InputRecord("t", 0, 0, None, None, b"")

    async def run() -> None:
        await migrate(services.postgres, namespace.schema)
        async with Database(services.postgres, schema=namespace.schema) as db:
            outcome = Outcome(record, persist=[SignalAnalyzed(odd, analysis)])
            assert await StoreSink(db, None, None).persist("test", [outcome]) == []
            rows = await db.fetch("SELECT raw_data FROM signals WHERE signal_id = %s", (odd.signal_id,))
            assert rows == [({"text": "close=65000 action=buy (not JSON)"},)]

    asyncio.run(run())


def test_signals_partitions_roll_ahead_and_the_statistics_views_answer(services, namespace):
    """Partitions exist two months back to three ahead; a signal lands in its month's partition; the
    seed's views signals_stats, active_positions and leverage_statistics report what was written."""
    from datetime import UTC, datetime

    from phoenix95.agents.ports import InputRecord
    from phoenix95.schemas.convert import analyze
    from tests import factories

    record = InputRecord("t", 0, 0, None, None, b"")
    now = datetime.now(UTC)
    signal = factories.signal(confidence="0.9")  # received now
    base = sample_outcomes()
    opened = _position_of(base[3].produce[0])
    _, closing = _marked(opened, [opened.take_profit_price])

    def month(offset: int) -> str:
        index = now.year * 12 + now.month - 1 + offset
        return f"signals_y{index // 12}m{index % 12 + 1:02d}"

    async def run() -> None:
        await migrate(services.postgres, namespace.schema)
        async with Database(services.postgres, schema=namespace.schema) as db:
            partitions = {
                row[0]
                for row in await db.fetch(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s",
                    (namespace.schema,),
                )
            }
            assert {month(offset) for offset in range(-2, 4)} | {"signals_default"} <= partitions
            sink = StoreSink(db, None, None)
            fresh = Outcome(record, persist=[SignalAnalyzed(signal, analyze(signal))])
            assert await sink.persist("test", [fresh, *base[:4]]) == []
            where = await db.fetch(
                "SELECT tableoid::regclass::text FROM signals WHERE signal_id = %s", (signal.signal_id,)
            )
            assert where[0][0].endswith(month(0))
            stats = await db.fetch("SELECT SUM(total_signals), SUM(valid_signals) FROM signals_stats")
            recent = await db.fetch(
                "SELECT COUNT(*), COUNT(DISTINCT symbol) FROM signals WHERE received_at >= NOW() - INTERVAL '24 hours'"
            )
            assert stats == [(recent[0][0], recent[0][0])] and recent[0][0] >= 1  # the fresh signal at least
            active = await db.fetch(
                "SELECT position_id::text, liquidation_risk_level, distance_to_liquidation FROM active_positions"
            )
            assert [row[0] for row in active] == [opened.position_id]
            distance = active[0][2]  # at 20x, ~4.6 % from entry: CRITICAL, as the seed's view says
            expected = "CRITICAL" if distance < 5 else "HIGH" if distance < 10 else "MEDIUM" if distance < 20 else "LOW"
            assert active[0][1] == expected
            assert await db.fetch("SELECT COUNT(*) FROM leverage_statistics") == [(0,)]
            assert await sink.persist("test", closing) == []
            assert await db.fetch("SELECT COUNT(*) FROM active_positions") == [(0,)]
            closed = await db.fetch("SELECT trade_count, win_rate, leverage FROM leverage_statistics")
            assert closed == [(1, 1, opened.leverage)]

    asyncio.run(run())


def test_redis_keys_carry_the_seeds_ttls_and_the_active_set_follows_open_positions(services, namespace):
    async def run() -> None:
        redis = RedisState.from_url(services.redis, prefix=namespace.redis_prefix)
        try:
            base = sample_outcomes()
            opened = _position_of(base[3].produce[0])
            await redis.apply([fact for outcome in base for fact in outcome.persist])
            analysis, price = base[0].persist[0].analysis, base[4].persist[0].price
            client = redis.client
            assert 0 < await client.ttl(redis.keys.price(price.symbol, price.exchange)) <= 60
            assert 0 < await client.ttl(redis.keys.analysis(analysis.signal_id)) <= 180
            assert await client.ttl(redis.keys.position(opened.position_id)) == -1  # open: no expiry
            assert await redis.active_positions() == {opened.position_id}
            _, closing = _marked(opened, [opened.take_profit_price])
            await redis.apply([fact for outcome in closing for fact in outcome.persist])
            assert await redis.active_positions() == set()
            assert 86000 < await client.ttl(redis.keys.position(opened.position_id)) <= 86400
        finally:
            await redis.close()

    asyncio.run(run())
