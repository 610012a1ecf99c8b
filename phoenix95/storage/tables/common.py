"""What every table module uses: a row type (a TypedDict: the columns, in order, and their types)
becomes an upsert statement over those columns, and a row built as a `{column: value}` mapping
becomes the statement's parameters in that order.

`row_params` turns a table's row function (`fact -> {column: value}`) into the parameter builder
the sinks call on every row. It compiles, once at import, a twin of the row function whose
`return {"a": x, "b": y}` is `return (x, y)`: the source stays a mapping that names every column,
and the hot path builds one tuple per row, as fast as hand-written positional rows (a dict of 40
columns and a lookup per column cost ~1 us a row more; `p95 bench --only sink_postgres`). The
mapping's keys must be the row type's columns in their declared order, or import fails naming
the function; the twin is unit-tested against the mapping for every table.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
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


def row_params(statement: Statement, row: Callable[[Any], Any]) -> Callable[[Any], tuple[Any, ...]]:
    """fact -> the statement's parameter tuple: `row`'s mapping compiled to a tuple (see above).
    Where `row`'s source cannot be read (a frozen install), its mapping is looked up per column."""
    try:
        source = textwrap.dedent(inspect.getsource(row))
        filename = inspect.getsourcefile(row) or "<row>"
        _, first_line = inspect.getsourcelines(row)
    except (OSError, TypeError):
        get = params(statement)
        return lambda fact: get(row(fact))
    tree = ast.parse(source)
    function = tree.body[0]
    if not isinstance(function, ast.FunctionDef) or row.__code__.co_freevars:
        raise ValueError(f"{row.__qualname__}: a table's row must be a module-level function")
    returns = [node for node in ast.walk(function) if isinstance(node, ast.Return)]
    if not returns:
        raise ValueError(f"{row.__qualname__}: no return")
    for node in returns:
        mapping = node.value
        keys = [k.value if isinstance(k, ast.Constant) else None for k in getattr(mapping, "keys", [None])]
        if not isinstance(mapping, ast.Dict) or tuple(keys) != statement.columns:
            raise ValueError(
                f"{row.__qualname__}: every return must be a {{column: value}} literal with the columns of "
                f"{statement.name} in their declared order: {', '.join(statement.columns)}"
            )
        node.value = ast.copy_location(ast.Tuple(elts=mapping.values, ctx=ast.Load()), mapping)
    function.name = f"{row.__name__}_params"
    function.returns = None
    for argument in function.args.args:
        argument.annotation = None
    ast.increment_lineno(tree, first_line - 1)
    namespace: dict[str, Any] = {}
    exec(compile(ast.fix_missing_locations(tree), filename, "exec"), row.__globals__, namespace)
    compiled: Callable[[Any], tuple[Any, ...]] = namespace[function.name]
    compiled.__module__ = row.__module__
    return compiled


_JSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS


def dumps(value: Any) -> str:
    """JSON for a JSONB column, as text: psycopg sends a str with no type, so PostgreSQL parses it
    as the column's jsonb (cheaper than psycopg's Python-level Jsonb dumper on every row). Compact;
    what is not JSON (Decimal, datetime) as its str(), as json.dumps(default=str)."""
    return orjson.dumps(value, default=str, option=_JSON_OPTIONS).decode()
