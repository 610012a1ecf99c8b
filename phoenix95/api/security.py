"""Credentials: API keys (random, stored as their SHA-256), dashboard passwords (argon2id), roles."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

Role = Literal["viewer", "operator"]
ROLES: tuple[Role, ...] = ("viewer", "operator")
#: A key reads `p95_<key id>_<secret>`: the id finds the row, the whole key's hash must match it.
KEY_PREFIX = "p95"


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key or a dashboard user, with its role."""

    kind: Literal["key", "user"]
    name: str
    role: Role

    @property
    def actor(self) -> str:
        """The audit actor: `api:<key id>` or `user:<name>`."""
        return f"api:{self.name}" if self.kind == "key" else f"user:{self.name}"

    @property
    def can_operate(self) -> bool:
        return self.role == "operator"


def parse_role(value: str) -> Role:
    if value not in ROLES:
        raise ValueError(f"role is viewer or operator, got {value!r}")
    return value  # type: ignore[return-value]


def new_api_key() -> tuple[str, str]:
    """(key id, the full key). The key is shown once; only its hash is stored."""
    key_id = "k" + secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(key: str) -> str | None:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1].startswith("k") or len(parts[1]) > 20:
        return None
    return parts[1]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def hash_password(password: str) -> str:
    from argon2 import PasswordHasher

    return PasswordHasher().hash(password)


def verify_password(encoded: str, password: str) -> bool:
    from argon2 import PasswordHasher
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return PasswordHasher().verify(encoded, password)
    except (VerificationError, InvalidHashError):
        return False


#: A dummy hash verified when a user does not exist, so a wrong name takes as long as a wrong password.
_DUMMY: list[str] = []


def dummy_verify(password: str) -> None:
    if not _DUMMY:
        _DUMMY.append(hash_password(secrets.token_urlsafe(16)))
    verify_password(_DUMMY[0], password)
