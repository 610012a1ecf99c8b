"""Deterministic identifiers.

Every event a stage derives from an input gets an id computed from the input's id, so a re-delivered
input produces byte-identical outputs and every upsert keyed by event id is a no-op the second time.
"""

from __future__ import annotations

import hashlib
import uuid

#: Namespace of all Phoenix95 derived ids (uuid5). Never change it: ids in stored data depend on it.
NAMESPACE = uuid.UUID("6f1c2a4e-95a0-5e2b-9d7c-95f0e1a2b3c4")
_CLIENT_ORDER_ID_PREFIX = "p95-"


_NAMESPACE_BYTES = NAMESPACE.bytes


def derive(kind: str, *parts: object) -> str:
    """A stable uuid5 for `kind` derived from `parts` (usually the id of the causing event).

    Exactly `str(uuid.uuid5(NAMESPACE, name))`, computed without building UUID objects (it runs
    for every event a stage emits)."""
    name = kind + ":" + "|".join(part if isinstance(part, str) else str(part) for part in parts)
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def analysis_id(signal_event_id: str) -> str:
    return derive("analysis", signal_event_id)


def verdict_id(analysis_event_id: str) -> str:
    return derive("verdict", analysis_event_id)


def order_id(verdict_event_id: str) -> str:
    return derive("order", verdict_event_id)


def position_id(order_event_id: str) -> str:
    return derive("position", order_event_id)


#: How many close orders an expired live position gets (a new one only after a definite refusal).
EXPIRY_ATTEMPTS = 10


def expiry_verdict_id(position_id: str, attempt: int = 0) -> str:
    """The close verdict the positions stage issues for a live position held to its expiry (attempt 0;
    a later attempt only after the exchange definitely refused the one before): deterministic, so a
    re-issued or re-delivered one is the same order, never a second close."""
    return derive("expiry", position_id, attempt)


def expiry_attempt(verdict_id: str, position_id: str) -> int | None:
    """Which attempt of `position_id`'s expiry close `verdict_id` is, or None when it is not one."""
    for attempt in range(EXPIRY_ATTEMPTS):
        if verdict_id == expiry_verdict_id(position_id, attempt):
            return attempt
    return None


def kill_switch_verdict_id(position_id: str) -> str:
    """The close verdict `p95 halt --flatten` issues for a position: the execution stage lets it
    through a HALT (it only closes) and the position closes with the reason `manual`."""
    return derive("kill-switch", position_id)


def close_order_id(position_id_: str, reason: str) -> str:
    return derive("close-order", position_id_, reason)


def client_order_id(order_id_: str) -> str:
    """Binance `newClientOrderId`: 1-36 characters of `[.A-Z:/a-z0-9_-]`.

    `p95-` followed by the 32 hex digits of the order's uuid: 36 characters, deterministic, so a
    re-delivered verdict asks the exchange about the same id before it would submit again.
    """
    return _CLIENT_ORDER_ID_PREFIX + uuid.UUID(order_id_).hex


def is_valid_client_order_id(value: str) -> bool:
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.:/_-")
    return 1 <= len(value) <= 36 and set(value) <= allowed
