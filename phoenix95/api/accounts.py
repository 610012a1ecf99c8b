"""API keys and dashboard users in PostgreSQL (migration 0007). All parameters bound."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from phoenix95.api.security import (
    Principal,
    Role,
    dummy_verify,
    hash_key,
    hash_password,
    key_id_of,
    new_api_key,
    parse_role,
    same_hash,
    verify_password,
)
from phoenix95.storage.postgres import Database

USER_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD = 10


async def create_key(db: Database, role: str, *, label: str = "", created_by: str) -> tuple[str, str]:
    """Create an API key: (key id, the key). Only the key's hash is stored."""
    role = parse_role(role)
    key_id, key = new_api_key()
    await db.execute(
        "INSERT INTO api_keys (key_id, key_hash, role, label, created_by) VALUES (%s, %s, %s, %s, %s)",
        (key_id, hash_key(key), role, label, created_by),
    )
    return key_id, key


async def revoke_key(db: Database, key_id: str) -> bool:
    rows = await db.fetch(
        "UPDATE api_keys SET revoked_at = NOW() WHERE key_id = %s AND revoked_at IS NULL RETURNING key_id", (key_id,)
    )
    return bool(rows)


async def list_keys(db: Database) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT key_id, role, label, created_at, created_by, revoked_at, last_used_at FROM api_keys ORDER BY created_at"
    )
    names = ("key_id", "role", "label", "created_at", "created_by", "revoked_at", "last_used_at")
    return [dict(zip(names, row, strict=True)) for row in rows]


async def principal_for_key(db: Database, key: str) -> Principal | None:
    """The key's principal, or None for an unknown, malformed or revoked key."""
    key_id = key_id_of(key)
    if key_id is None:
        return None
    rows = await db.fetch("SELECT key_hash, role, revoked_at FROM api_keys WHERE key_id = %s", (key_id,))
    if not rows:
        return None
    stored, role, revoked_at = rows[0]
    if revoked_at is not None or not same_hash(stored, hash_key(key)):
        return None
    return Principal("key", key_id, role)


async def add_user(db: Database, name: str, password: str, role: str) -> None:
    if not USER_NAME.match(name):
        raise ValueError("user names are 1-64 letters, digits, _ . @ -")
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"passwords have at least {MIN_PASSWORD} characters")
    parsed: Role = parse_role(role)
    await db.execute(
        """INSERT INTO dashboard_users (name, password_hash, role) VALUES (%s, %s, %s)
           ON CONFLICT (name) DO UPDATE SET password_hash = EXCLUDED.password_hash, role = EXCLUDED.role,
               disabled_at = NULL""",
        (name, hash_password(password), parsed),
    )


async def user_count(db: Database) -> int:
    rows = await db.fetch("SELECT COUNT(*) FROM dashboard_users WHERE disabled_at IS NULL")
    return int(rows[0][0])


async def authenticate_user(db: Database, name: str, password: str) -> Principal | None:
    rows = await db.fetch(
        "SELECT password_hash, role FROM dashboard_users WHERE name = %s AND disabled_at IS NULL", (name,)
    )
    if not rows:
        dummy_verify(password)
        return None
    encoded, role = rows[0]
    if not verify_password(encoded, password):
        return None
    return Principal("user", name, role)


async def touch_key(db: Database, key_id: str, at: datetime) -> None:
    await db.execute("UPDATE api_keys SET last_used_at = %s WHERE key_id = %s", (at, key_id))
