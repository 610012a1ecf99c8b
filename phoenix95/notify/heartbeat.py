"""Worker events: a stage announces "started" and, when it is being shut down, "stopping" on
p95.control.events. A worker that dies without a word is noticed by its heartbeat (the
`s4:metrics:{stage}` key every worker refreshes, 15 s TTL) expiring: the notifications stage checks it."""

from __future__ import annotations

import os
import socket
from typing import Literal

from phoenix95.domain import ids
from phoenix95.schemas.envelope import utc_now
from phoenix95.schemas.messages import ControlEvent

_STARTED_AT = utc_now()


def worker_event(stage: str, state: str, severity: str = "info") -> ControlEvent:
    """The event; its id is derived from the process and the state, so a retried publish is one event."""
    host, pid = socket.gethostname(), os.getpid()
    event_id = ids.derive("worker-event", stage, state, host, pid, _STARTED_AT.isoformat())
    level: Literal["info", "warning", "critical"] = severity if severity in ("info", "warning", "critical") else "info"  # type: ignore[assignment]
    verb = {"started": "started", "stopping": "is stopping (shutdown requested)"}.get(state, state)
    return ControlEvent(
        **ControlEvent.envelope(
            event_id=event_id, correlation_id=event_id, causation_id=None, ts_event=utc_now(), producer=stage
        ),
        kind="worker",
        severity=level,
        actor=f"{host}:{pid}"[:50],
        subject=stage,
        state=state,
        reason=None,
        message=f"Worker {stage} on {host} (pid {pid}) {verb}.",
    )
