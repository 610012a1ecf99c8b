"""The one place API and dashboard actions are audited (who, what, when, from where).

Every state-changing call of the API and the dashboard goes through `record`. It writes a row of the
`audit_log` table of migration 0001 (actor, action, subject, details; `at` is the insert time). The
compliance work (issue #18) turns the audit log into a hash chain: point this function at its writer
and nothing else changes.
"""

from __future__ import annotations

from typing import Any

from phoenix95.storage.postgres import Database


async def record(
    db: Database,
    *,
    actor: str,
    action: str,
    subject: str | None,
    remote: str | None,
    details: dict[str, Any] | None = None,
) -> None:
    """Audit one action: `actor` (api:<key id> or user:<name>), `action` (e.g. api.trading_state),
    `subject` (what it acted on), `remote` (the client address)."""
    import json

    payload = {**(details or {}), "remote": remote}
    await db.execute(
        "INSERT INTO audit_log (actor, action, subject, details) VALUES (%s, %s, %s, %s::jsonb)",
        (actor, action, subject, json.dumps(payload, default=str)),
    )
