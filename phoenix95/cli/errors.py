"""What the user sees when a command fails on an expected condition: one or two lines saying what is
wrong and what to do (exit status 2), never a traceback. `explain` maps an exception (or one in its
chain) to that message; anything it does not know is unexpected (cli/main.py prints a one-line hint,
and the traceback with `--log-level DEBUG`).

Expected conditions: the stack is not running, the broker / PostgreSQL / Redis / time-series store
is down, the schema is behind (`p95 db migrate`), invalid settings (named by their variable), a
missing or unreadable file, an unknown symbol, and every `UserError` a command raises.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from typing import Any

#: Errors of a connection that could not be made (any service).
_REFUSED = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ECONNRESET, errno.ETIMEDOUT}


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                pending.append(linked)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def explain(error: BaseException) -> str | None:
    """The user-facing message of an expected failure, or None for an unexpected one."""
    for current in _chain(error):
        message = _explain_one(current)
        if message is not None:
            return message
    return None


def _settings() -> Any:
    try:
        from phoenix95.settings import get_settings

        return get_settings()
    except Exception:
        return None


def _where(kind: str) -> str:
    settings = _settings()
    if settings is None:
        return ""
    try:
        if kind == "broker":
            return f" at {settings.kafka.bootstrap_servers}"
        if kind == "postgres" and settings.postgres.url is not None:
            from urllib.parse import urlsplit

            parts = urlsplit(settings.postgres.url.get_secret_value())
            return f" at {parts.hostname}:{parts.port or 5432}"
        if kind == "redis" and settings.redis.url is not None:
            from urllib.parse import urlsplit

            parts = urlsplit(settings.redis.url.get_secret_value())
            return f" at {parts.hostname}:{parts.port or 6379}"
    except Exception:
        return ""
    return ""


def _down(kind: str, setting: str, name: str) -> str:
    return (
        f"cannot reach {name}{_where(kind)}.\n"
        f"Is the stack running? Start it with `p95 up` (or check {setting}); `p95 doctor` checks everything."
    )


def _explain_one(error: BaseException) -> str | None:
    from phoenix95.cli.console import UserError

    if isinstance(error, UserError):
        return _first_line(error) if "\n" not in str(error).strip() else str(error).strip()
    name = type(error).__name__
    module = type(error).__module__
    # settings
    try:
        from pydantic import ValidationError
    except ImportError:  # pragma: no cover
        ValidationError = ()  # type: ignore[assignment,misc]
    if isinstance(error, ValidationError):
        return _invalid(error)
    # PostgreSQL
    if module.startswith(("psycopg", "psycopg_pool")):
        sqlstate = getattr(error, "sqlstate", None) or ""
        if sqlstate in ("42P01", "42703", "42883", "3F000") or name in ("UndefinedTable", "UndefinedColumn"):
            return (
                f"the database schema is behind this version ({_first_line(error)}).\n"
                "Run `p95 db migrate` (or `p95 up`, which migrates)."
            )
        if name in ("OperationalError", "PoolTimeout", "ConnectionTimeout") or sqlstate.startswith("08"):
            return _down("postgres", "P95_POSTGRES__URL", "PostgreSQL")
        return None
    if name == "MigrationError":
        return _first_line(error)
    # Redis
    if module.startswith("redis") and name in ("ConnectionError", "TimeoutError", "BusyLoadingError"):
        return _down("redis", "P95_REDIS__URL", "Redis")
    # the broker
    if module.startswith(("aiokafka", "kafka")) and name in (
        "KafkaConnectionError",
        "NoBrokersAvailable",
        "KafkaTimeoutError",
        "RequestTimedOutError",
    ):
        return _down("broker", "P95_KAFKA__BOOTSTRAP_SERVERS", "the broker")
    if name == "BrokerUnavailable":
        return f"{_first_line(error)}.\nIs the stack running? Start it with `p95 up`; `p95 doctor` checks everything."
    if name == "ServiceNotConfigured":
        return _first_line(error)
    # files
    if isinstance(error, FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError):
        target = error.filename or _first_line(error)
        return f"cannot read {target}: {error.strerror or _first_line(error)}"
    if isinstance(error, ConnectionRefusedError) or (isinstance(error, OSError) and error.errno in _REFUSED):
        return f"a service refused the connection ({_first_line(error)}): is the stack running? `p95 up`; `p95 doctor`"
    if isinstance(error, RuntimeError) and not isinstance(error, NotImplementedError | RecursionError):
        return _first_line(error)
    return None


def _invalid(error: Any) -> str:
    """A pydantic error; for the settings, each problem named by its environment variable."""
    lines = []
    is_settings = getattr(error, "title", "") == "Settings"
    for item in error.errors()[:3]:
        location = [str(part) for part in item.get("loc", ())]
        if is_settings:
            variable = "P95_" + "__".join(part.upper() for part in location)
            value = item.get("input")
            shown = f"={value!r}" if isinstance(value, str | int | float) and len(str(value)) < 60 else ""
            lines.append(f"invalid setting {variable}{shown}: {item.get('msg')}")
        else:
            lines.append(f"invalid {'.'.join(location) or 'value'}: {item.get('msg')}")
    return "\n".join(lines) if lines else _first_line(error)
