"""The audit chain, pure: RFC 8785 canonical JSON and chain verification naming the first broken entry."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phoenix95.domain.audit import (
    GENESIS,
    CanonicalError,
    Entry,
    canonical_json,
    entry_document,
    entry_hash,
    verify_chain,
)

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.text()
    | st.decimals(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def test_canonical_json_matches_rfc8785_examples() -> None:
    # RFC 8785 section 3.2.3: members sorted by UTF-16 code units ("\u20ac" < "\ud83d\ude00" < "\ufb33" there)
    assert canonical_json({"\u20ac": 1, "\ufb33": 2, "\U0001f600": 3, "a": 4, "1": 5}) == (
        '{"1":5,"a":4,"\u20ac":1,"\U0001f600":3,"\ufb33":2}'
    )
    # section 3.2.2.2: only '"', '\\' and the controls are escaped; controls without a short form as \u00xx
    assert canonical_json("\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"/") == '"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"'
    assert canonical_json({"b": [True, None, False], "a": {}}) == '{"a":{},"b":[true,null,false]}'


def test_canonical_json_refuses_floats_huge_integers_and_naive_times() -> None:
    with pytest.raises(CanonicalError, match="floats"):
        canonical_json({"x": 1.5})
    with pytest.raises(CanonicalError, match="not exactly representable"):
        canonical_json(2**53)
    with pytest.raises(CanonicalError, match="timezone-aware"):
        canonical_json(datetime(2026, 1, 1))


def test_decimals_are_strings_without_exponent() -> None:
    assert (
        canonical_json({"pnl": Decimal("-206.86441869"), "n": Decimal("1E+2")}) == '{"n":"100","pnl":"-206.86441869"}'
    )


@given(json_values)
def test_canonical_json_is_json_and_stable_under_reordering(value: object) -> None:
    text = canonical_json(value)
    parsed = json.loads(text)
    assert canonical_json(parsed) == canonical_json(json.loads(json.dumps(parsed, sort_keys=False)))
    if isinstance(parsed, dict):
        assert canonical_json(dict(reversed(list(parsed.items())))) == text


@given(
    action=st.text(max_size=10),
    actor=st.text(max_size=10),
    key=st.text(max_size=10),
    subject=st.none() | st.text(max_size=10),
    payload=st.dictionaries(st.text(max_size=6), json_values, max_size=4),
)
def test_the_entry_document_is_the_canonical_json_of_the_entry(action, actor, key, subject, payload) -> None:
    at = "2026-12-04T12:00:00.000000Z"
    document = entry_document(action, actor, at, key, canonical_json(payload), subject)
    expected = canonical_json(
        {"action": action, "actor": actor, "at": at, "key": key, "payload": payload, "subject": subject}
    )
    assert document == expected


def chain(length: int) -> list[tuple]:
    rows = []
    prev = GENESIS
    for seq in range(1, length + 1):
        entry = Entry(f"k{seq}", "stage:risk", "verdict", f"v{seq}", {"n": seq, "pnl": Decimal(seq) / 7}, T0)
        at, payload = entry.document()
        digest = entry_hash(prev, entry_document(entry.action, entry.actor, at, entry.key, payload, entry.subject))
        rows.append((seq, at, entry.actor, entry.action, entry.subject, entry.key, payload, prev, digest))
        prev = digest
    return rows


def test_an_untouched_chain_verifies() -> None:
    result = verify_chain(chain(50))
    assert (result.ok, result.checked, result.broken_at, result.last_seq) == (True, 50, None, 50)


@given(st.data())
def test_every_tampering_is_found_at_the_right_entry(data: st.DataObject) -> None:
    rows = chain(12)
    kind = data.draw(st.sampled_from(["payload", "delete", "swap", "forge", "actor", "time"]))
    index = data.draw(st.integers(0, len(rows) - 2))
    if kind == "payload":
        row = rows[index]
        rows[index] = (*row[:6], row[6].replace('"n":', '"n":1'), *row[7:])
        expected = index + 1
    elif kind == "actor":
        rows[index] = (*rows[index][:2], "cli:mallory", *rows[index][3:])
        expected = index + 1
    elif kind == "time":
        later = (T0 + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        rows[index] = (*rows[index][:1], later, *rows[index][2:])
        expected = index + 1
    elif kind == "delete":
        del rows[index]
        expected = index + 2  # the entry after the deleted one
    elif kind == "swap":
        other = data.draw(st.integers(index + 1, len(rows) - 1))
        first, second = rows[index], rows[other]
        rows[index], rows[other] = (first[0], *second[1:]), (second[0], *first[1:])
        expected = index + 1
    else:  # a forged row in place of a real one: hash recomputed, prev_hash not the predecessor's
        row = rows[index]
        wrong_prev = bytes(32) if index else b"\x01" * 32
        forged = row[6].replace('"n":', '"n":9')
        digest = entry_hash(wrong_prev, entry_document(row[3], row[2], row[1], row[5], forged, row[4]))
        rows[index] = (*row[:6], forged, wrong_prev, digest)
        expected = index + 1
    result = verify_chain(rows)
    assert not result.ok
    assert result.broken_at == expected, (kind, index, result)
