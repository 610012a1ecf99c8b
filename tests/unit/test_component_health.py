"""The health module every long-running component uses: /health with its dependencies, /metrics,
and the registration `p95 status` reads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, Counter
from starlette.applications import Starlette

from phoenix95.monitoring.health import (
    Dependency,
    Health,
    add_health_routes,
    list_components,
    probe,
    register_component,
    registered,
    serve_health,
)
from phoenix95.settings import DEFAULT_PORTS, Settings


async def up() -> str | None:
    return "fine"


async def down() -> str | None:
    raise ConnectionRefusedError("connection refused")


async def test_ready_only_when_every_required_dependency_is_up():
    health = Health(
        "api",
        {"broker": up, "postgres": down, "timeseries": Dependency(down, required=False), "off": None},
        cache_s=0,
    )
    report = await health.report()
    assert report["status"] == "not_ready" and report["live"] is True and report["component"] == "api"
    assert report["dependencies"]["broker"] == {"status": "up", "required": True, "detail": "fine"}
    assert report["dependencies"]["postgres"]["status"] == "down"
    assert "connection refused" in report["dependencies"]["postgres"]["detail"]
    assert report["dependencies"]["off"]["status"] == "off"

    optional_down = Health("api", {"broker": up, "timeseries": Dependency(down, required=False)}, cache_s=0)
    assert (await optional_down.report())["status"] == "ready"


async def test_a_check_that_hangs_is_down_after_the_timeout():
    import asyncio

    async def hangs() -> str | None:
        await asyncio.sleep(30)
        return None

    report = await Health("feed", {"broker": hangs}, timeout_s=0.05).report()
    assert report["dependencies"]["broker"]["status"] == "down"
    assert "no answer within" in report["dependencies"]["broker"]["detail"]


async def test_starlette_app_serves_health_live_and_metrics():
    registry = CollectorRegistry()
    Counter("p95_things", "things", registry=registry).inc()
    app = Starlette()
    add_health_routes(app, Health("notifications", {"broker": down}), metrics=registry)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        ready, live, metrics = (
            await client.get("/health"),
            await client.get("/health/live"),
            await client.get("/metrics"),
        )
    assert ready.status_code == 503 and ready.json()["status"] == "not_ready"
    assert live.status_code == 200 and live.json()["live"] is True
    assert "p95_things_total 1.0" in metrics.text


async def test_serve_health_on_a_free_port_answers_probe(tmp_path: Path):
    health = Health("feed", {"broker": up})
    server = await serve_health(health, "127.0.0.1", 0)
    port = server.port
    try:
        assert health.port == port and port > 0
        with registered(tmp_path, "feed", port=port) as path:
            assert path.is_file()
            [component] = list_components(tmp_path)
            import asyncio

            body = await asyncio.to_thread(probe, component)
        assert not path.exists()
    finally:
        await server.stop()
    assert component["name"] == "feed" and component["pid"] == os.getpid() and component["port"] == port
    assert body is not None and body["status"] == "ready" and body["uptime_s"] >= 0


def test_registrations_of_dead_processes_are_dropped(tmp_path: Path):
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from phoenix95.monitoring.health import register_component as r; import sys; "
            f"r({str(tmp_path)!r}, 'risk', port=8104)",
        ]
    )
    child.wait(timeout=60)
    register_component(tmp_path, "analysis", port=None)
    assert [c["name"] for c in list_components(tmp_path)] == ["analysis"]
    assert len(list((tmp_path / "components").glob("*.json"))) == 1


def test_default_ports_are_the_seed_service_map():
    settings = Settings()
    assert DEFAULT_PORTS == {
        "api": 8100, "webhook": 8101, "feed": 8102, "analysis": 8103, "risk": 8104,
        "execution": 8106, "positions": 8107, "compliance": 8108, "notifications": 8109, "dashboard": 8110,
    }  # fmt: skip
    assert {name: settings.port_of(name) for name in DEFAULT_PORTS} == DEFAULT_PORTS
