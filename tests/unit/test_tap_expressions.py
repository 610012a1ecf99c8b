"""The --where language: comparisons over decoded fields, and/or/not, in, contains, dotted paths,
message fields with `$`; clear errors; never Python's eval."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from phoenix95.tap.expressions import ExpressionError, compile_expression, compile_path, tokenize

VERDICT = {
    "symbol": "BTCUSDT",
    "decision": "APPROVED",
    "side": "long",
    "price": "60000.5",
    "confidence": "0.9",
    "reasons": ["CONFIDENCE_BELOW_MIN", "SIGNAL_STALE"],
    "plan": {"notional": "1500.25", "leverage": 20, "var_1d_95": None},
    "ts_event": datetime(2026, 11, 24, 10, 0, tzinfo=UTC),
    "adjustments": [{"code": "RSI_AGAINST", "delta": "-0.1"}],
    "close_position_id": None,
}
METADATA = {
    "topic": "t1.p95.risk.verdicts",
    "partition": 2,
    "offset": 17,
    "timestamp": datetime(2026, 11, 24, 10, 0, 1, tzinfo=UTC),
    "key": "BTCUSDT",
    "schema": "phoenix95.RiskVerdict.v1",
    "error": None,
    "headers": {"p95-schema": "phoenix95.RiskVerdict.v1", "p95-correlation-id": "sig-1"},
}


def matches(text: str, value=VERDICT, metadata=METADATA) -> bool:
    return compile_expression(text)(value, metadata)


@pytest.mark.parametrize(
    "text",
    [
        'decision == "APPROVED"',
        "decision = 'APPROVED'",
        'side != "short"',
        "plan.notional > 100",
        "plan.notional >= 1500.25",
        "plan.leverage == 20",
        "plan.leverage < 25.5",
        "price <= 60000.5",
        "confidence > .5",
        'symbol in ["BTCUSDT", "ETHUSDT"]',
        'symbol in ("BTCUSDT", "ETHUSDT")',
        'symbol not in ["XRPUSDT"]',
        '"BTC" in symbol',
        'reasons contains "SIGNAL_STALE"',
        'symbol contains "USDT"',
        'symbol startswith "BTC" and symbol endswith "USDT"',
        'symbol matches "^B.C"',
        'adjustments[0].code == "RSI_AGAINST"',
        "adjustments[-1].delta < 0",
        'reasons[1] == "SIGNAL_STALE"',
        "plan",
        "not close_position_id",
        "plan.var_1d_95 == null",
        "close_position_id != 3",
        'ts_event >= "2026-11-24T10:00:00Z"',
        'ts_event < "2026-11-24T10:00:00.000001+00:00"',
        "ts_event == 1795514400000",
        '$topic endswith "p95.risk.verdicts" and $partition == 2 and $offset > 10',
        '$key == "BTCUSDT"',
        '$headers["p95-correlation-id"] == "sig-1"',
        "$headers.missing == null",
        '$timestamp > "2026-11-24T10:00:00Z"',
        '$schema startswith "phoenix95.RiskVerdict"',
        "$error == null",
        'decision == "REJECTED" or plan.notional > 1000',
        'not (decision == "REJECTED" or side == "short")',
        'NOT decision == "REJECTED" AND true',
    ],
)
def test_expression_matches_the_verdict(text):
    assert matches(text) is True


@pytest.mark.parametrize(
    "text",
    [
        'decision == "REJECTED"',
        "plan.notional > 2000",
        "plan.notional < 100",
        'symbol in ["ETHUSDT"]',
        'reasons contains "UNKNOWN"',
        "missing.deeper.field > 1",
        "missing == 0",
        "symbol > 5",
        "adjustments[5].code == null and false",
        '"abc" < 3',
        "ts_event > 1795514400000",
        "close_position_id",
        'false or null or 0 or ""',
        'decision == "APPROVED" and side == "short"',
    ],
)
def test_expression_does_not_match_the_verdict(text):
    assert matches(text) is False


def test_and_binds_tighter_than_or():
    assert matches('decision == "REJECTED" and side == "long" or symbol == "BTCUSDT"') is True
    assert matches('decision == "REJECTED" and (side == "long" or symbol == "BTCUSDT")') is False


def test_decimal_strings_compare_as_numbers_not_text():
    # as text "9" > "10"; as numbers it is not
    assert matches("price > 10", {"price": "9"}) is False
    assert matches("price == 1.5", {"price": "1.50"}) is True


def test_a_value_that_is_not_a_record_matches_only_tests_that_allow_null():
    assert matches("symbol == null", None) is True
    assert matches('symbol == "BTCUSDT"', None) is False
    assert matches('$error contains "DECODE"', None, {**METADATA, "error": "DECODE_ERROR: truncated"}) is True


def test_string_escapes_are_read():
    assert matches(r'text == "say \"hi\"\n"', {"text": 'say "hi"\n'}) is True


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty expression"),
        ("price >", "expected a field, a value or '('"),
        ("price > 1 2", "expected 'and', 'or' or the end"),
        ("(price > 1", "expected ')'"),
        ("price ? 1", "unexpected character '?'"),
        ('symbol not "X"', "expected 'in' after 'not'"),
        ("$nothing == 1", "unknown message field $nothing"),
        ("reasons[1.5] == 1", "expected a string or an integer index"),
        ('symbol matches "("', "bad pattern"),
        ("symbol in [a]", "expected a number, a string, true, false or null"),
    ],
)
def test_bad_expression_is_an_error_that_says_where(text, message):
    with pytest.raises(ExpressionError) as caught:
        compile_expression(text)
    assert message in str(caught.value)
    assert "column" in str(caught.value)


def test_python_is_never_evaluated():
    with pytest.raises(ExpressionError):
        compile_expression("__import__('os').system('true')")
    with pytest.raises(ExpressionError):
        compile_expression("symbol.__class__ == 1; 1")
    # attribute-looking paths only ever read dict keys
    assert matches("symbol.upper == null") is True


def test_tokenizer_reads_numbers_strings_names_and_operators():
    kinds = [(t.kind, t.text) for t in tokenize('plan.notional >= -1.5e3 and $key in ["a"]')]
    assert kinds == [
        ("name", "plan"),
        ("punctuation", "."),
        ("name", "notional"),
        ("operator", ">="),
        ("number", "-1.5e3"),
        ("keyword", "and"),
        ("name", "$key"),
        ("keyword", "in"),
        ("punctuation", "["),
        ("string", '"a"'),
        ("punctuation", "]"),
        ("end", ""),
    ]


def test_a_field_path_reads_nested_values_and_message_fields():
    assert compile_path("plan.notional")(VERDICT, METADATA) == "1500.25"
    assert compile_path("adjustments[0].code")(VERDICT, METADATA) == "RSI_AGAINST"
    assert compile_path("$offset")(VERDICT, METADATA) == 17
    assert compile_path("plan.missing")(VERDICT, METADATA) is None
    with pytest.raises(ExpressionError):
        compile_path("plan.notional > 1")
