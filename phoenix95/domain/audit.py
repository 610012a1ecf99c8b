"""The audit chain, pure: canonical JSON (RFC 8785), entry hashes and chain verification.

An entry is hashed as ``sha256(prev_hash || canonical_json(entry))`` where the entry document is
``{"action", "actor", "at", "key", "payload", "subject"}`` and ``prev_hash`` is the previous
entry's hash (32 zero bytes before the first). Changing, deleting, reordering or inserting a row
breaks the chain at that row, which `verify_chain` names.

Canonical JSON follows RFC 8785 (JCS) for the values we use: object members sorted by their UTF-16
code units, no whitespace, strings escaped as ECMAScript's JSON.stringify does. Floats are refused
(money is Decimal, written as a string); integers must be exactly representable as IEEE doubles.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

HASH_MISMATCH = "hash does not match the entry's content"
#: The `prev_hash` of the first entry.
GENESIS = bytes(32)
#: Integers beyond this cannot be represented exactly by an ECMAScript number (RFC 8785 section 3.2.2.3).
MAX_SAFE_INTEGER = 2**53 - 1

_dumps_string = json.JSONEncoder(ensure_ascii=False).encode


class CanonicalError(TypeError):
    """A value has no canonical JSON form here (a float, a huge integer, an unknown type)."""


def canonical_json(value: Any) -> str:
    """RFC 8785 canonical JSON text of `value` (dicts, lists, str, int, bool, None, Decimal, datetime)."""
    parts: list[str] = []
    _write(value, parts)
    return "".join(parts)


def _write(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise CanonicalError(f"integer {value} is not exactly representable in canonical JSON; pass a string")
        out.append(str(int(value)))
    elif isinstance(value, float):
        raise CanonicalError("floats are not used in audit payloads; pass a Decimal or a string")
    elif isinstance(value, Decimal):
        out.append(_string(decimal_text(value)))
    elif isinstance(value, datetime):
        out.append(_string(timestamp_text(value)))
    elif isinstance(value, date):
        out.append(_string(value.isoformat()))
    elif isinstance(value, Enum):
        _write(value.value, out)
    elif isinstance(value, Mapping):
        items = []
        for key in value:
            if not isinstance(key, str):
                raise CanonicalError(f"object keys must be strings, not {type(key).__name__}")
            items.append(key)
        items.sort(key=lambda k: k.encode("utf-16-be"))
        out.append("{")
        for index, key in enumerate(items):
            if index:
                out.append(",")
            out.append(_string(key))
            out.append(":")
            _write(value[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise CanonicalError(f"no canonical JSON form for {type(value).__name__}")


def _string(text: str) -> str:
    # Python escapes exactly what JSON.stringify escapes ('"', '\\', \b \f \n \r \t, other
    # controls as lowercase \u00xx) and nothing else with ensure_ascii=False; a lone surrogate
    # cannot be encoded as UTF-8 and is refused.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise CanonicalError("strings must be valid Unicode (no lone surrogates)") from error
    return _dumps_string(text)


def decimal_text(value: Decimal) -> str:
    """A Decimal as plain text without exponent (``1E+2`` -> ``100``)."""
    return format(value, "f")


def timestamp_text(value: datetime) -> str:
    """UTC, microseconds, ``Z``: the one text form of an entry time (PostgreSQL formats it the same
    way for verification, see `storage.audit`)."""
    if value.tzinfo is None:
        raise CanonicalError("timestamps must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_document(action: str, actor: str, at: str, key: str, payload: str, subject: str | None) -> str:
    """The canonical JSON of one entry, with `payload` already canonical JSON text (what the table
    stores). Equal to ``canonical_json({...})`` of the same entry, built without parsing."""
    return (
        '{"action":'
        + _dumps_string(action)
        + ',"actor":'
        + _dumps_string(actor)
        + ',"at":'
        + _dumps_string(at)
        + ',"key":'
        + _dumps_string(key)
        + ',"payload":'
        + payload
        + ',"subject":'
        + ("null" if subject is None else _dumps_string(subject))
        + "}"
    )


def entry_hash(prev_hash: bytes, document: str) -> bytes:
    return hashlib.sha256(prev_hash + document.encode("utf-8")).digest()


@dataclass(frozen=True)
class Entry:
    """One audit entry as a writer hands it over (before it has a place in the chain).

    `key` makes it idempotent: a second entry with the same key (a re-delivered event) is not written.
    """

    key: str
    actor: str
    action: str
    subject: str | None
    payload: Mapping[str, Any]
    at: datetime

    def document(self) -> tuple[str, str]:
        """(at text, canonical payload text)."""
        return timestamp_text(self.at), canonical_json(self.payload)


@dataclass(frozen=True)
class ChainRow:
    """One stored entry, as verification reads it."""

    seq: int
    at: str
    actor: str
    action: str
    subject: str | None
    key: str
    payload: str
    prev_hash: bytes
    hash: bytes


@dataclass(frozen=True)
class Verification:
    ok: bool
    checked: int
    #: The sequence number of the first entry that does not fit the chain.
    broken_at: int | None = None
    problem: str | None = None
    last_seq: int | None = None
    last_hash: bytes | None = None


def verify_chain(
    rows: Iterable[tuple[Any, ...]], *, expected_seq: int = 1, expected_prev: bytes = GENESIS
) -> Verification:
    """Walk rows ``(seq, at, actor, action, subject, key, payload, prev_hash, hash)`` in sequence
    order; the first that does not follow from the one before it is `broken_at`."""
    checked = 0
    last_seq: int | None = None
    prev = expected_prev
    document = entry_document
    sha256 = hashlib.sha256
    for seq, at, actor, action, subject, key, payload, prev_hash, stored_hash in rows:
        if seq != expected_seq:
            problem = "an entry is missing before this one" if seq > expected_seq else "sequence out of order"
            return Verification(False, checked, seq, problem, last_seq, prev)
        if prev_hash != prev:
            return Verification(
                False, checked, seq, "prev_hash does not match the previous entry's hash", last_seq, prev
            )
        if (
            sha256(prev_hash + document(action, actor, at, key, payload, subject).encode("utf-8")).digest()
            != stored_hash
        ):
            return Verification(False, checked, seq, HASH_MISMATCH, last_seq, prev)
        prev = bytes(stored_hash)
        last_seq = seq
        expected_seq = seq + 1
        checked += 1
    return Verification(True, checked, None, None, last_seq, prev)


def verify_documents(
    rows: Iterable[tuple[Any, ...]],
    *,
    expected_seq: int = 1,
    expected_prev: bytes = GENESIS,
    documents: Mapping[int, str] | None = None,
) -> Verification:
    """`verify_chain` over rows ``(seq, document, prev_hash, hash)`` whose entry document the
    database assembled (the fast path of `p95 audit verify`); `documents` overrides the document of
    some entries (one the caller rebuilt itself with `entry_document`)."""
    checked = 0
    last_seq: int | None = None
    prev = expected_prev
    sha256 = hashlib.sha256
    overrides = documents or {}
    for seq, document, prev_hash, stored_hash in rows:
        if seq != expected_seq:
            problem = "an entry is missing before this one" if seq > expected_seq else "sequence out of order"
            return Verification(False, checked, seq, problem, last_seq, prev)
        if prev_hash != prev:
            return Verification(
                False, checked, seq, "prev_hash does not match the previous entry's hash", last_seq, prev
            )
        if overrides and seq in overrides:
            document = overrides[seq]
        if sha256(prev_hash + document.encode("utf-8")).digest() != stored_hash:
            return Verification(False, checked, seq, HASH_MISMATCH, last_seq, prev)
        prev = bytes(stored_hash)
        last_seq = seq
        expected_seq = seq + 1
        checked += 1
    return Verification(True, checked, None, None, last_seq, prev)
