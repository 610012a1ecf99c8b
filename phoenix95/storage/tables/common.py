"""What every table module uses: a row type (a TypedDict: the columns, in order, and their types)
becomes an upsert statement over those columns, and a row built as a `{column: value}` mapping
becomes the statement's parameters in that order (`params`, one C-level lookup per column)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from operator import itemgetter
from typing import Any

import orjson

from phoenix95.storage.postgres import Statement, upsert

#: A row of one table, as a mapping from column to value.
Row = Mapping[str, Any]


def columns(row_type: type) -> tuple[str, ...]:
    """The columns of a row type, in the order they are declared."""
    return tuple(row_type.__annotations__)


def table_upsert(name: str, table: str, row_type: type, *, order: int, **options: Any) -> Statement:
    """The upsert of `table` over the columns of `row_type` (`options`: see `postgres.upsert`)."""
    return upsert(name, table, columns(row_type), order=order, **options)


def params(statement: Statement) -> Callable[[Row], tuple[Any, ...]]:
    """Row mapping -> the statement's parameter tuple (in its column order)."""
    get = itemgetter(*statement.columns)
    return get  # type: ignore[return-value]


_JSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS


def dumps(value: Any) -> str:
    """JSON for a JSONB column, as text: psycopg sends a str with no type, so PostgreSQL parses it
    as the column's jsonb (cheaper than psycopg's Python-level Jsonb dumper on every row). Compact;
    what is not JSON (Decimal, datetime) as its str(), as json.dumps(default=str)."""
    return orjson.dumps(value, default=str, option=_JSON_OPTIONS).decode()
