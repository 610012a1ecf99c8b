"""PostgreSQL: connection pool, migrations, and the batched, idempotent write path.

Every stage hands the sink one group of writes per input event. A batch is written in one
transaction with one pipelined ``executemany`` per statement. Transient failures (connection lost,
server restarting, timeouts, serialization failures) retry with capped backoff while the partition
waits; a permanent failure is isolated to the input events that cause it, which are dead-lettered.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import psycopg
import psycopg_pool
from psycopg import sql

from phoenix95.storage.retry import retry_transient

logger = logging.getLogger(__name__)

_MIGRATIONS_PACKAGE = "phoenix95.storage.migrations"


@dataclass(frozen=True, eq=False)
class Statement:
    """One SQL statement the sinks write through. Statements are module-level constants compared by
    identity (a batch groups its rows by statement: hashing every field for every row cost more than
    a microsecond a row)."""

    name: str
    sql: str
    #: Statements run in this order inside a batch (parents before children for foreign keys).
    order: int
    #: For upserts: the target table and columns, so a large batch can go through COPY.
    table: str | None = None
    columns: tuple[str, ...] = ()
    copy_insert: str | None = None
    #: ON CONFLICT DO NOTHING: a batch of new rows can be COPYed straight into the table.
    insert_only: bool = False
    #: Constant columns (name, value) appended to every row on that direct path.
    constant_values: tuple[tuple[str, str], ...] = ()
    dedupe_key: int | None = None
    dedupe_rank: Callable[[tuple[Any, ...]], Any] | None = field(default=None, compare=False, hash=False)
    #: Writes its rows itself, inside the batch's transaction (the audit chain: storage/audit.py).
    writer: Callable[[psycopg.AsyncCursor[Any], list[PgWrite]], Awaitable[None]] | None = field(
        default=None, compare=False, hash=False
    )


#: Batches of at least this many rows of one upsert go through COPY into a temporary table.
COPY_THRESHOLD = 32


def upsert(
    name: str,
    table: str,
    columns: tuple[str, ...],
    *,
    order: int,
    constants: dict[str, str] | None = None,
    conflict: str = "ON CONFLICT DO NOTHING",
    dedupe_key: int | None = None,
    dedupe_rank: Callable[[tuple[Any, ...]], Any] | None = None,
) -> Statement:
    """An INSERT .. ON CONFLICT keyed by an event id, usable row by row or through COPY."""
    constants = constants or {}
    names = ", ".join((*columns, *constants))
    values = ", ".join(["%s"] * len(columns) + list(constants.values()))
    selected = ", ".join((*columns, *constants.values()))
    return Statement(
        name=name,
        sql=f"INSERT INTO {table} ({names}) VALUES ({values}) {conflict}",
        order=order,
        table=table,
        columns=columns,
        copy_insert=f"INSERT INTO {table} ({names}) SELECT {selected} FROM {{temp}} {conflict}",
        insert_only=conflict == "ON CONFLICT DO NOTHING" and all(_is_text_literal(v) for v in constants.values()),
        constant_values=tuple((name, value[1:-1]) for name, value in constants.items() if _is_text_literal(value)),
        dedupe_key=dedupe_key,
        dedupe_rank=dedupe_rank,
    )


def _is_text_literal(value: str) -> bool:
    return len(value) >= 2 and value[0] == value[-1] == "'" and "'" not in value[1:-1]


class PgWrite:
    """One row for one statement: its parameters, or the fact they are built from. The parameters of
    an upsert are a tuple in its column order (built from a `{column: value}` row, see
    `storage/tables/`); those of a statement with named placeholders (`%(name)s`) a mapping.

    A write built from a fact (`PgWrite.of`) builds its row on first use. The sink then builds a
    batch's rows while it streams them to PostgreSQL (COPY sends every 32 KiB), so Python's row
    building runs while the server is inserting the rows already sent, instead of before any are.
    """

    __slots__ = ("_build", "_params", "_source", "statement")

    def __init__(
        self,
        statement: Statement,
        params: tuple[Any, ...] | Mapping[str, Any] | None = None,
        build: Callable[[Any], tuple[Any, ...]] | None = None,
        source: Any = None,
    ):
        if (params is None) == (build is None):
            raise ValueError("a PgWrite needs its params or a function that builds them")
        self.statement = statement
        self._params = params
        self._build = build
        self._source = source

    @classmethod
    def of(cls, statement: Statement, build: Callable[[Any], tuple[Any, ...]], source: Any) -> PgWrite:
        return cls(statement, None, build, source)

    @property
    def params(self) -> Any:
        if self._params is None:
            assert self._build is not None
            self._params = self._build(self._source)
            self._source = None
        return self._params

    def __repr__(self) -> str:
        return f"PgWrite({self.statement.name}, {self.params!r})"


def is_transient(error: BaseException) -> bool:
    """Connection-level and retryable server errors; data and constraint errors are permanent."""
    if isinstance(error, psycopg_pool.PoolTimeout | TimeoutError | ConnectionError):
        return True
    if isinstance(error, psycopg.errors.DataError | psycopg.errors.IntegrityError | psycopg.errors.ProgrammingError):
        return False
    return isinstance(error, psycopg.OperationalError | psycopg.InterfaceError)


class Database:
    def __init__(
        self,
        url: str,
        *,
        schema: str = "public",
        min_size: int = 1,
        max_size: int = 8,
        connect_timeout: float = 5.0,
        statement_timeout: float | None = None,
    ):
        self.url = url
        self.schema = schema
        #: A statement running longer is cancelled by the server (a write stuck behind a lock): the
        #: sink sees a transient error, logs it and retries, instead of waiting unseen for ever.
        self.statement_timeout = statement_timeout
        #: Called with (attempt, error) when a write is retried (the stage counts them).
        self.on_retry: Callable[[int, BaseException], None] | None = None
        self._connect_timeout = max(1, int(connect_timeout))
        self._pool = psycopg_pool.AsyncConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            open=False,
            kwargs={"connect_timeout": max(1, int(connect_timeout))},
            configure=self._configure,
            check=psycopg_pool.AsyncConnectionPool.check_connection,
            reconnect_timeout=0,
            timeout=30,
        )

    async def _configure(self, connection: psycopg.AsyncConnection) -> None:
        await connection.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        if self.statement_timeout:
            milliseconds = max(1, round(self.statement_timeout * 1000))
            await connection.execute("SELECT set_config('statement_timeout', %s, false)", (f"{milliseconds}ms",))
        await connection.commit()

    async def open(self) -> None:
        """Open the pool. A server that refuses the connection now raises at once (one direct
        connection attempt) instead of every query waiting for it: a command run while PostgreSQL is
        down says so; a stage starts only after its migrations reached the server anyway."""
        conn = await psycopg.AsyncConnection.connect(self.url, connect_timeout=self._connect_timeout)
        await conn.close()
        await self._pool.open(wait=False)

    async def close(self) -> None:
        await self._pool.close()

    async def __aenter__(self) -> Database:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def pool(self) -> psycopg_pool.AsyncConnectionPool:
        return self._pool

    async def fetch(
        self, query: str | sql.SQL | sql.Composed, params: Sequence[Any] | None = None
    ) -> list[tuple[Any, ...]]:
        async def run() -> list[tuple[Any, ...]]:
            async with self._pool.connection() as connection, connection.cursor() as cursor:
                await cursor.execute(query, params)
                return await cursor.fetchall() if cursor.description else []

        return await retry_transient(run, what="postgres query", is_transient=is_transient, max_delay=2.0)

    async def execute(
        self, query: str | sql.SQL | sql.Composed, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> None:
        async def run() -> None:
            async with self._pool.connection() as connection:
                await connection.execute(query, params)

        await retry_transient(run, what="postgres statement", is_transient=is_transient, max_delay=2.0)

    async def write(self, groups: Sequence[Sequence[PgWrite]]) -> list[tuple[int, Exception]]:
        """Write the groups (one per input event) in one transaction, retrying transient failures.

        Returns the groups that failed permanently, as (index, error); all others are written.
        """
        if not any(groups):
            return []
        try:
            await retry_transient(
                lambda: self._write_all(groups),
                what="postgres batch write",
                is_transient=is_transient,
                on_retry=self.on_retry,
            )
            return []
        except Exception as error:
            logger.warning(
                "postgres batch of %d groups failed permanently (%s); isolating the bad ones", len(groups), error
            )
        failures: list[tuple[int, Exception]] = []
        for index, group in enumerate(groups):
            if not group:
                continue
            try:
                await self._write_group(group)
            except Exception as error:
                failures.append((index, error))
        return failures

    async def _write_group(self, group: Sequence[PgWrite]) -> None:
        await retry_transient(
            lambda: self._write_all([group]), what="postgres write", is_transient=is_transient, on_retry=self.on_retry
        )

    async def _write_all(self, groups: Sequence[Sequence[PgWrite]]) -> None:
        by_statement: dict[Statement, list[PgWrite]] = defaultdict(list)
        for group in groups:
            for write in group:
                by_statement[write.statement].append(write)
        statements = sorted(by_statement, key=lambda s: (s.order, s.name))
        try:
            await self._write_statements(statements, by_statement, direct=True)
        except psycopg.errors.UniqueViolation:
            # A row COPYed straight into its table was there already (a re-delivered batch): the
            # transaction is rolled back and the batch written again through the upsert path, which
            # skips the rows already written.
            await self._write_statements(statements, by_statement, direct=False)

    async def _write_statements(
        self, statements: list[Statement], by_statement: dict[Statement, list[PgWrite]], *, direct: bool
    ) -> None:
        async with self._pool.connection() as connection, connection.transaction(), connection.cursor() as cursor:
            for statement in statements:
                writes = _latest_writes(statement, by_statement[statement])
                if statement.writer is not None:
                    await statement.writer(cursor, writes)
                elif statement.copy_insert is not None and len(writes) >= COPY_THRESHOLD:
                    if direct and statement.insert_only:
                        await _copy_direct(cursor, statement, writes)
                    else:
                        await _copy_through_temp(cursor, statement, writes)
                else:
                    await cursor.executemany(statement.sql, [write.params for write in writes])


def _latest_writes(statement: Statement, writes: list[PgWrite]) -> list[PgWrite]:
    """Of several rows for one key in a batch (a position marked on every price), keep the latest:
    one upsert per key, whichever path writes them."""
    if statement.dedupe_key is None or statement.dedupe_rank is None or len(writes) < 2:
        return writes
    key, rank = statement.dedupe_key, statement.dedupe_rank
    latest: dict[Any, PgWrite] = {}
    for write in writes:
        row = write.params
        seen = latest.get(row[key])
        if seen is None or rank(row) >= rank(seen.params):
            latest[row[key]] = write
    return list(latest.values())


async def _copy_direct(cursor: psycopg.AsyncCursor[Any], statement: Statement, writes: list[PgWrite]) -> None:
    """An insert-only batch is COPYed straight into its table: new rows, the steady state, are
    written once, with no temporary table and no savepoint. A row already there (a re-delivery)
    fails the COPY with a unique violation, and the caller writes the batch again the upsert way."""
    columns = statement.columns + tuple(name for name, _ in statement.constant_values)
    constants = tuple(value for _, value in statement.constant_values)
    await _copy_rows(cursor, statement.table, columns, (write.params + constants for write in writes))


async def _copy_rows(
    cursor: psycopg.AsyncCursor[Any], table: str | None, columns: tuple[str, ...], rows: Iterable[tuple[Any, ...]]
) -> None:
    assert table is not None
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    async with cursor.copy(copy_sql) as copy:
        for row in rows:
            await copy.write_row(row)


async def _copy_through_temp(cursor: psycopg.AsyncCursor[Any], statement: Statement, writes: list[PgWrite]) -> None:
    """COPY the rows into a session temp table (emptied at commit), then one INSERT .. SELECT."""
    assert statement.table is not None and statement.copy_insert is not None
    temp = f"p95_copy_{statement.table}"
    await cursor.execute(
        sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS").format(
            sql.Identifier(temp), sql.Identifier(statement.table)
        )
    )
    await _copy_rows(cursor, temp, statement.columns, (write.params for write in writes))
    await cursor.execute(statement.copy_insert.format(temp=temp).encode())


# -- migrations ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def bundled_migrations() -> list[Migration]:
    folder = resources.files(_MIGRATIONS_PACKAGE)
    migrations = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version, _, rest = entry.name.partition("_")
            migrations.append(
                Migration(version=version, name=rest.removesuffix(".sql"), sql=entry.read_text(encoding="utf-8"))
            )
    return sorted(migrations, key=lambda m: m.version)


class MigrationError(RuntimeError):
    pass


async def migrate(url: str, schema: str = "public", *, connect_timeout: float = 5.0, wait: bool = False) -> list[str]:
    """Apply the bundled migrations not applied yet; idempotent and safe to run concurrently.

    Returns the versions applied by this call. Also rolls the signals partitions forward. With
    `wait`, an unreachable server is waited for (a worker starting while PostgreSQL restarts).
    """
    if wait:
        return await retry_transient(
            lambda: migrate(url, schema, connect_timeout=connect_timeout),
            what="postgres migrate",
            is_transient=is_transient,
        )
    applied_now: list[str] = []
    async with await psycopg.AsyncConnection.connect(
        url, autocommit=True, connect_timeout=max(1, int(connect_timeout))
    ) as conn:
        lock_key = int.from_bytes(
            hashlib.sha256(f"phoenix95.migrate.{schema}".encode()).digest()[:8], "big", signed=True
        )
        await conn.execute("SELECT pg_advisory_lock(%s)", (lock_key,))
        try:
            await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version TEXT PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL,"
                " applied_at TIMESTAMPTZ NOT NULL DEFAULT NOW())"
            )
            cursor = await conn.execute("SELECT version, checksum FROM schema_migrations")
            applied = {row[0]: row[1] for row in await cursor.fetchall()}
            for migration in bundled_migrations():
                if migration.version in applied:
                    if applied[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.version}_{migration.name} changed after it was applied to schema {schema}"
                        )
                    continue
                logger.info("applying migration %s_%s to schema %s", migration.version, migration.name, schema)
                async with conn.transaction():
                    await conn.execute(migration.sql)  # type: ignore[arg-type]
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                applied_now.append(migration.version)
            await conn.execute("SELECT p95_ensure_signal_partitions()")
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (lock_key,))
    return applied_now


async def drop_schema(url: str, schema: str) -> None:
    if schema == "public":
        raise ValueError("refusing to drop the public schema")
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
