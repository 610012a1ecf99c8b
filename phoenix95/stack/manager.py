"""`p95 up | status | down`: the embedded stack in a state directory (default `.p95/`).

`up` is idempotent: what runs and is healthy is kept, what is missing is started. Services the
environment points elsewhere (P95_POSTGRES__URL, P95_REDIS__URL, P95_INFLUX__URL, P95_KAFKA__...)
are used as they are. Endpoints go to `endpoints.json`, which every other command reads.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phoenix95.stack import services
from phoenix95.stack.processes import is_running, stop
from phoenix95.stack.services import Endpoint

logger = logging.getLogger(__name__)
SERVICES = ("kafka", "postgres", "redis", "timeseries")


@dataclass(frozen=True)
class External:
    """Endpoints given by the environment (not managed by the stack)."""

    kafka: str | None = None
    postgres: str | None = None
    redis: str | None = None
    timeseries: str | None = None

    @classmethod
    def from_environment(cls) -> External:
        return cls(
            kafka=os.environ.get("P95_KAFKA__BOOTSTRAP_SERVERS"),
            postgres=os.environ.get("P95_POSTGRES__URL"),
            redis=os.environ.get("P95_REDIS__URL"),
            timeseries=os.environ.get("P95_INFLUX__URL"),
        )


HEALTH: dict[str, Callable[[str], bool]] = {
    "kafka": services.broker_healthy,
    "postgres": services.postgres_healthy,
    "redis": services.redis_healthy,
    "timeseries": services.timeseries_healthy,
}


class Stack:
    def __init__(self, home: Path, *, timeseries_retention_days: int | None = None):
        self.home = Path(home)
        self.timeseries_retention_days = timeseries_retention_days
        self.path = self.home / "endpoints.json"

    def load(self) -> dict[str, Endpoint]:
        if not self.path.is_file():
            return {}
        data = json.loads(self.path.read_text())
        return {name: Endpoint.from_json(value) for name, value in data.items() if name in SERVICES}

    def save(self, endpoints: dict[str, Endpoint]) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({name: e.to_json() for name, e in endpoints.items()}, indent=2))
        tmp.replace(self.path)

    def up(
        self, external: External | None = None, *, on_step: Callable[[str], None] | None = None
    ) -> dict[str, Endpoint]:
        external = external or External.from_environment()
        self.home.mkdir(parents=True, exist_ok=True)
        current = self.load()
        say = on_step or (lambda message: None)
        result: dict[str, Endpoint] = {}
        for name in SERVICES:
            given = getattr(external, name)
            if given:
                result[name] = Endpoint(name, given, managed=False, kind="external")
                continue
            existing = current.get(name)
            if (
                existing is not None
                and existing.managed
                and is_running(existing.pid, existing.expect)
                and existing.url
                and HEALTH[name](existing.url)
            ):
                say(f"{name}: already running at {existing.url}")
                result[name] = existing
                continue
            if existing is not None and existing.managed:
                self._stop(existing)
            say(f"{name}: starting")
            result[name] = self._start(name)
            say(f"{name}: {result[name].url or result[name].note}")
            self.save({**current, **result})
        self.save(result)
        return result

    def _start(self, name: str) -> Endpoint:
        if name == "kafka":
            return services.start_broker(self.home)
        if name == "postgres":
            return services.start_postgres(self.home)
        if name == "redis":
            return services.start_redis(self.home)
        if services.victoria_metrics_binary() is None:
            note = (
                "no time-series store: set P95_INFLUX__URL or install victoria-metrics "
                "(apt-get install victoria-metrics); the time-series sink is off"
            )
            logger.warning(note)
            return Endpoint("timeseries", None, managed=False, kind="none", note=note)
        return services.start_victoria_metrics(self.home, retention_days=self.timeseries_retention_days)

    def status(self) -> dict[str, dict[str, Any]]:
        endpoints = self.load()
        report: dict[str, dict[str, Any]] = {}
        for name in SERVICES:
            endpoint = endpoints.get(name)
            if endpoint is None:
                report[name] = {
                    "url": None,
                    "healthy": False,
                    "pid": None,
                    "managed": False,
                    "note": "not started (p95 up)",
                }
                continue
            healthy = bool(endpoint.url) and HEALTH[name](endpoint.url or "")
            if endpoint.managed and not is_running(endpoint.pid, endpoint.expect):
                healthy = False
            report[name] = {
                "url": endpoint.url,
                "healthy": healthy,
                "pid": endpoint.pid if endpoint.managed else None,
                "managed": endpoint.managed,
                "kind": endpoint.kind,
                "note": endpoint.note,
                "log": endpoint.log,
            }
        return report

    def down(self) -> list[str]:
        stopped = []
        endpoints = self.load()
        for name in reversed(SERVICES):
            endpoint = endpoints.get(name)
            if endpoint is not None and endpoint.managed and self._stop(endpoint):
                stopped.append(name)
        if self.path.exists():
            self.path.unlink()
        return stopped

    def _stop(self, endpoint: Endpoint) -> bool:
        if endpoint.name == "postgres":
            running = is_running(endpoint.pid, endpoint.expect)
            services.stop_postgres(endpoint)
            return running
        return stop(endpoint.pid, expect=endpoint.expect)
