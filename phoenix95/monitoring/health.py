"""Health, metrics and registration for every long-running component (workers, webhook, feed, API,
dashboard, notifications, compliance). A leaf module: it imports nothing of ours.

The whole API, in the order a component uses it::

    from phoenix95.monitoring.health import Health, add_health_routes, dependency_checks, registered

    health = Health("notifications", dependency_checks(settings, "broker", "postgres", "redis"))
    add_health_routes(app, health, metrics=registry)   # FastAPI/Starlette: /health, /health/live, /health/ready, /metrics
    with registered(settings.home, "notifications", port=8109):
        uvicorn.run(app, port=8109)                     # `p95 status` lists it while the process lives

- A Faust worker's web server: ``add_faust_pages(faust_app, health, metrics=exposition)``.
- A component without a web server of its own (a feed): ``await serve_health(health, host, port)``
  runs one in the background (a uvicorn server; ``await server.stop()`` ends it).
- ``dependency_checks(settings, *names)`` builds the checks of the stores by name: ``broker``,
  ``postgres`` (reachable *and* migrated), ``redis``, ``timeseries`` (optional: "off" when not
  configured). Any other check is an ``async def check() -> str | None``: it returns a detail (or
  None) when the dependency is up and raises when it is down (the error becomes the detail).
- ``metrics`` is a prometheus_client ``CollectorRegistry`` or a callable returning
  ``(body: bytes, content_type: str)``.

``GET /health`` (and ``/health/ready``) answers 200 when every required dependency is up, else 503::

    {"component": "notifications", "status": "ready" | "not_ready", "live": true, "pid": 4242,
     "port": 8109, "started_at": "2026-12-04T15:40:00+00:00", "uptime_s": 12.3,
     "dependencies": {"broker": {"status": "up" | "down" | "off", "required": true, "detail": "..."}, ...}}

``GET /health/live`` answers 200 while the process serves requests. Checks run concurrently, each
within ``timeout_s`` (2 s), and a report is reused for ``cache_s`` (2 s), so probes never load the
stores. Registration writes ``$P95_HOME/components/<name>-<pid>.json`` (name, kind, pid, host, port,
started_at, health_url); ``list_components(home)`` returns those of live processes and removes the
rest; ``probe(component)`` fetches a component's /health for `p95 status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: A dependency check: returns a detail (or None) when up, raises when down.
Check = Callable[[], Awaitable[str | None]]
Exposition = Callable[[], tuple[bytes, str]]
COMPONENTS_DIR = "components"
UP, DOWN, OFF = "up", "down", "off"


@dataclass(frozen=True)
class Dependency:
    """One thing a component needs; `required=False` ones are reported but never make it unready."""

    check: Check | None
    required: bool = True


@dataclass
class Health:
    """The health of one component: its dependencies' checks, run on demand and cached briefly."""

    component: str
    dependencies: Mapping[str, Dependency | Check | None] = field(default_factory=dict)
    timeout_s: float = 2.0
    cache_s: float = 2.0
    port: int | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    _cached: tuple[float, dict[str, Any]] | None = field(default=None, repr=False)
    _lock: asyncio.Lock | None = field(default=None, repr=False)

    def _dependency(self, value: Dependency | Check | None) -> Dependency:
        return value if isinstance(value, Dependency) else Dependency(value, required=value is not None)

    async def report(self) -> dict[str, Any]:
        """The /health body (cached for `cache_s`)."""
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < self.cache_s:
            return self._with_uptime(self._cached[1])
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._cached is not None and time.monotonic() - self._cached[0] < self.cache_s:
                return self._with_uptime(self._cached[1])
            names = list(self.dependencies)
            deps = [self._dependency(self.dependencies[name]) for name in names]
            results = await asyncio.gather(*(self._run(dep) for dep in deps))
            dependencies = {
                name: {"status": status, "required": dep.required, "detail": detail}
                for name, dep, (status, detail) in zip(names, deps, results, strict=True)
            }
            ready = all(item["status"] == UP for item in dependencies.values() if item["required"])
            body = {
                "component": self.component,
                "status": "ready" if ready else "not_ready",
                "live": True,
                "pid": os.getpid(),
                "port": self.port,
                "started_at": self.started_at.isoformat(),
                "dependencies": dependencies,
            }
            self._cached = (time.monotonic(), body)
            return self._with_uptime(body)

    def _with_uptime(self, body: dict[str, Any]) -> dict[str, Any]:
        uptime = (datetime.now(UTC) - self.started_at).total_seconds()
        return {**body, "uptime_s": round(uptime, 1)}

    async def _run(self, dependency: Dependency) -> tuple[str, str | None]:
        if dependency.check is None:
            return OFF, "not configured"
        try:
            detail = await asyncio.wait_for(dependency.check(), self.timeout_s)
        except TimeoutError:
            return DOWN, f"no answer within {self.timeout_s:g}s"
        except Exception as error:  # the check's failure is the detail, never the probe's
            return DOWN, (str(error).splitlines() or [type(error).__name__])[0][:200] or type(error).__name__
        return UP, detail


# -- the stores' checks -------------------------------------------------------------------------------


def broker_check(bootstrap_servers: str) -> Check:
    async def check() -> str | None:
        from aiokafka import AIOKafkaClient

        client = AIOKafkaClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=5000)
        try:
            await client.bootstrap()
        finally:
            await client.close()
        return bootstrap_servers

    return check


def postgres_check(url: str, schema: str = "public") -> Check:
    """Reachable, and every bundled migration applied (else: "run `p95 db migrate`")."""

    async def check() -> str | None:
        import psycopg
        from psycopg import sql

        async with await psycopg.AsyncConnection.connect(url, connect_timeout=5, autocommit=True) as conn:
            cursor = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{schema}.schema_migrations",))
            row = await cursor.fetchone()
            if not row or not row[0]:
                raise RuntimeError("schema not migrated: run `p95 db migrate`")
            query = sql.SQL("SELECT version FROM {}.schema_migrations").format(sql.Identifier(schema))
            cursor = await conn.execute(query)
            applied = {version for (version,) in await cursor.fetchall()}
        missing = sorted(expected_migrations() - applied)
        if missing:
            raise RuntimeError(f"migrations {', '.join(missing)} not applied: run `p95 db migrate`")
        return f"{len(applied)} migrations"

    return check


def expected_migrations() -> set[str]:
    """The versions of the bundled migrations (the files in phoenix95/storage/migrations)."""
    from importlib import resources

    folder = resources.files("phoenix95.storage").joinpath("migrations")
    return {entry.name.split("_", 1)[0] for entry in folder.iterdir() if entry.name.endswith(".sql")}


def redis_check(url: str) -> Check:
    async def check() -> str | None:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        try:
            await client.ping()
        finally:
            await client.aclose()
        return None

    return check


def http_check(url: str, timeout_s: float = 1.0) -> Check:
    """Up when `url` answers 2xx (run in a thread: urllib blocks)."""

    async def check() -> str | None:
        def get() -> int:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                return int(response.status)

        status = await asyncio.to_thread(get)
        if not 200 <= status < 300:
            raise RuntimeError(f"HTTP {status}")
        return None

    return check


def dependency_checks(settings: Any, *names: str) -> dict[str, Dependency]:
    """Checks of the stores by name (broker, postgres, redis, timeseries) from the settings; a store
    that is not configured is reported "off" (and makes a required dependency down)."""
    checks: dict[str, Dependency] = {}
    for name in names:
        if name == "broker":
            checks[name] = Dependency(broker_check(settings.kafka.bootstrap_servers))
        elif name == "postgres":
            url = settings.postgres.url.get_secret_value() if settings.postgres.url else None
            checks[name] = Dependency(postgres_check(url, settings.postgres.db_schema) if url else _missing("postgres"))
        elif name == "redis":
            url = settings.redis.url.get_secret_value() if settings.redis.url else None
            checks[name] = Dependency(redis_check(url) if url else _missing("redis"))
        elif name == "timeseries":
            url = settings.influx.url if settings.influx.enabled else None
            checks[name] = Dependency(http_check(url.rstrip("/") + "/health") if url else None, required=False)
        else:
            raise ValueError(f"unknown dependency {name!r}; expected broker, postgres, redis or timeseries")
    return checks


def _missing(name: str) -> Check:
    async def check() -> str | None:
        raise RuntimeError(f"no {name} configured (run `p95 up`)")

    return check


# -- serving /health and /metrics ------------------------------------------------------------------------


def _exposition(metrics: Any) -> Exposition | None:
    if metrics is None or callable(metrics):
        return metrics
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return lambda: (generate_latest(metrics), CONTENT_TYPE_LATEST)


def add_health_routes(app: Any, health: Health, *, metrics: Any = None) -> None:
    """Add GET /health, /health/ready, /health/live (and /metrics when `metrics` is given) to a
    Starlette or FastAPI app. Routes go first, so they win over any older /health of the app."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def ready(request: Request) -> Response:
        body = await health.report()
        return JSONResponse(body, status_code=200 if body["status"] == "ready" else 503)

    async def live(request: Request) -> Response:
        return JSONResponse({"component": health.component, "live": True, "pid": os.getpid()})

    routes = [
        Route("/health", ready, methods=["GET"]),
        Route("/health/ready", ready, methods=["GET"]),
        Route("/health/live", live, methods=["GET"]),
    ]
    exposition = _exposition(metrics)
    if exposition is not None:

        async def prometheus(request: Request) -> Response:
            body, content_type = exposition()
            return Response(body, media_type=content_type)

        routes.append(Route("/metrics", prometheus, methods=["GET"]))
    app.router.routes[0:0] = routes


def add_faust_pages(faust_app: Any, health: Health, *, metrics: Any = None) -> None:
    """The same routes on a Faust worker's web server (`web_enabled=True`)."""

    async def ready(web: Any, request: Any) -> Any:
        body = await health.report()
        return web.json(body, status=200 if body["status"] == "ready" else 503)

    async def live(web: Any, request: Any) -> Any:
        return web.json({"component": health.component, "live": True, "pid": os.getpid()})

    faust_app.page("/health")(ready)
    faust_app.page("/health/ready")(ready)
    faust_app.page("/health/live")(live)
    exposition = _exposition(metrics)
    if exposition is not None:

        async def prometheus(web: Any, request: Any) -> Any:
            body, content_type = exposition()
            # Faust's aiohttp driver refuses a content type with a charset (HTTP 500)
            parts = [part.strip() for part in content_type.split(";") if not part.strip().startswith("charset")]
            return web.bytes(body, content_type="; ".join(parts))

        faust_app.page("/metrics")(prometheus)


class HealthServer:
    """A background uvicorn server with only the health routes (see `serve_health`)."""

    def __init__(self, server: Any, task: asyncio.Task[None]):
        self.server = server
        self.task = task

    @property
    def port(self) -> int:
        sockets = [s for srv in self.server.servers for s in srv.sockets]
        return int(sockets[0].getsockname()[1]) if sockets else 0

    async def stop(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.task, 5)


async def serve_health(health: Health, host: str, port: int, *, metrics: Any = None) -> HealthServer:
    """Serve the health routes on host:port in the background; port 0 picks a free one. Raises
    OSError when the port is taken."""
    import uvicorn
    from starlette.applications import Starlette

    app = Starlette()
    add_health_routes(app, health, metrics=metrics)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    # `_serve`, not `serve`: the component owns the signals (uvicorn's `serve` captures them)
    task = asyncio.create_task(server._serve())
    while not server.started:
        if task.done():
            task.result()  # raises what stopped it
            raise OSError(f"could not serve on {host}:{port}")
        await asyncio.sleep(0.02)
    running = HealthServer(server, task)
    if health.port is None or health.port == 0:
        health.port = running.port
    return running


# -- registration --------------------------------------------------------------------------------------


def component_path(home: Path | str, name: str, pid: int | None = None) -> Path:
    return Path(home) / COMPONENTS_DIR / f"{name}-{pid or os.getpid()}.json"


def register_component(
    home: Path | str, name: str, *, port: int | None, host: str = "127.0.0.1", kind: str | None = None
) -> Path:
    """Write this process's registration; returns its path (remove it with `unregister_component`)."""
    path = component_path(home, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "name": name,
        "kind": kind or name,
        "pid": os.getpid(),
        "host": host,
        "port": port,
        "started_at": datetime.now(UTC).isoformat(),
        "health_url": f"http://{host}:{port}/health" if port else None,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(path)
    return path


def unregister_component(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


@contextlib.contextmanager
def registered(
    home: Path | str, name: str, *, port: int | None, host: str = "127.0.0.1", kind: str | None = None
) -> Iterator[Path]:
    """Registered while the block runs (and removed by `list_components` if the process dies)."""
    path = register_component(home, name, port=port, host=host, kind=kind)
    try:
        yield path
    finally:
        unregister_component(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_components(home: Path | str) -> list[dict[str, Any]]:
    """The registrations of live processes, by name; files of dead processes are removed."""
    folder = Path(home) / COMPONENTS_DIR
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            record = json.loads(path.read_text())
            pid = int(record["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not _alive(pid):
            unregister_component(path)
            continue
        found.append(record)
    return sorted(found, key=lambda record: (str(record.get("name")), int(record["pid"])))


def probe(component: Mapping[str, Any], timeout_s: float = 1.0) -> dict[str, Any] | None:
    """A registered component's /health body (also when it answers 503), or None if it does not answer."""
    url = component.get("health_url")
    if not url:
        return None
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as error:
        try:
            return dict(json.loads(error.read()))
        except ValueError:
            return None
    except (OSError, ValueError):
        return None
