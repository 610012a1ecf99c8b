"""The one place API and dashboard actions are audited (who, what, when, from where).

Every state-changing call of the API and the dashboard goes through `record` (and a trading-state
switch through `Runtime.set_trading_state`, which hands the same facts to the `p95 halt` path).

Two audit-log layouts exist while issue #18 lands: the plain `audit_log` of migration 0001 (actor,
action, subject, details) and the compliance hash chain (migration 0005, written by
`phoenix95.storage.audit.record_action`). `record` uses the chain's writer when that module exists and
the plain insert otherwise, so merging #18 needs no change here; `entries` reads either layout.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

from phoenix95.storage.postgres import Database


def chain_writer() -> Any:
    """The compliance audit chain's `record_action`, once issue #18 is merged (else None)."""
    try:
        module = importlib.import_module("phoenix95.storage.audit")
    except ImportError:
        return None
    return getattr(module, "record_action", None)


async def record(
    db: Database,
    *,
    actor: str,
    action: str,
    subject: str | None,
    remote: str | None,
    details: dict[str, Any] | None = None,
) -> None:
    """Audit one action: `actor` (api:<key id> or user:<name>), `action` (e.g. replay.start),
    `subject` (what it acted on), `remote` (the client address), `details` (text values)."""
    payload = {key: value for key, value in {**(details or {}), "remote": remote}.items() if value is not None}
    writer = chain_writer()
    if writer is not None:
        await writer(db, actor=actor, action=action, subject=subject, payload=payload)
        return
    await db.execute(
        "INSERT INTO audit_log (actor, action, subject, details) VALUES (%s, %s, %s, %s::jsonb)",
        (actor, action, subject, json.dumps(payload, default=str)),
    )


async def entries(db: Database) -> list[tuple[str, str, str | None, dict[str, Any]]]:
    """(actor, action, subject, details) of every entry, oldest first, from either layout."""
    columns = {
        row[0]
        for row in await db.fetch(
            """SELECT column_name FROM information_schema.columns
                WHERE table_schema = current_schema() AND table_name = 'audit_log'"""
        )
    }
    if "payload" in columns:
        rows = await db.fetch("SELECT actor, action, subject, payload FROM audit_log ORDER BY seq")
        return [(a, b, c, json.loads(p) if isinstance(p, str) else p) for a, b, c, p in rows]
    rows = await db.fetch("SELECT actor, action, subject, details FROM audit_log ORDER BY id")
    return [(a, b, c, d or {}) for a, b, c, d in rows]


def flat(details: dict[str, Any]) -> dict[str, Any]:
    """An entry's details with a nested `details` object merged in (the chain nests the caller's)."""
    inner = details.get("details")
    return {**details, **inner} if isinstance(inner, dict) else details
