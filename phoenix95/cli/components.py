"""The running components for `p95 status`: their registrations ($P95_HOME/components) and /health."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def uptime_text(started_at: str | None) -> str:
    if not started_at:
        return "-"
    try:
        seconds = int((datetime.now(UTC) - datetime.fromisoformat(started_at)).total_seconds())
    except ValueError:
        return "-"
    hours, rest = divmod(max(seconds, 0), 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def component_rows(home: Path) -> list[dict[str, Any]]:
    """One row per live component: name, kind, pid, port, health (ready, not_ready, no answer, or
    no port), uptime, and the dependencies that are down."""
    from phoenix95.monitoring.health import list_components, probe

    components = list_components(home)
    with ThreadPoolExecutor(max_workers=8) as pool:
        bodies = list(pool.map(probe, components))
    rows = []
    for component, body in zip(components, bodies, strict=True):
        if not component.get("port"):
            health = "no port"
        elif body is None:
            health = "no answer"
        else:
            health = str(body.get("status", "?"))
        down = [
            name
            for name, dependency in ((body or {}).get("dependencies") or {}).items()
            if dependency.get("status") == "down"
        ]
        rows.append(
            {
                "name": component.get("name"),
                "kind": component.get("kind"),
                "pid": component.get("pid"),
                "port": component.get("port"),
                "url": component.get("health_url"),
                "health": health,
                "uptime": uptime_text(component.get("started_at")),
                "started_at": component.get("started_at"),
                "down": down,
            }
        )
    return rows
