"""Bad input is recognised with the right dead-letter reason, never an exception that escapes."""

from __future__ import annotations

import json

import pytest

from phoenix95.schemas.codec import Codec, DecodeError, Reason
from phoenix95.schemas.messages import Analysis, Signal
from tests import factories
from tests.unit.samples import samples

CODEC = Codec()
VALID = {"symbol": "BTCUSDT", "action": "buy", "price": "60000", "confidence": "0.8"}


def reason_of(data: bytes, *, headers=()) -> Reason:
    with pytest.raises(DecodeError) as caught:
        CODEC.decode_signal(data, headers=headers, fallback_id="fallback")
    return caught.value.reason


def json_body(**changes) -> bytes:
    payload = {**VALID, **changes}
    return json.dumps({k: v for k, v in payload.items() if v is not ...}).encode()


def test_empty_message_is_empty_message():
    assert reason_of(b"") is Reason.EMPTY_MESSAGE


def test_truncated_avro_is_a_decode_error():
    data = CODEC.encode(factories.signal())
    for cut in (3, 12, len(data) // 2, len(data) - 1):
        assert reason_of(data[:cut]) in (Reason.DECODE_ERROR, Reason.SCHEMA_MISMATCH)


def test_bytes_written_with_another_schema_are_a_schema_mismatch():
    analysis = samples()[1]
    assert isinstance(analysis, Analysis)
    assert reason_of(CODEC.encode(analysis)) is Reason.SCHEMA_MISMATCH


def test_unknown_fingerprint_is_a_schema_mismatch():
    data = bytearray(CODEC.encode(factories.signal()))
    data[2:10] = b"\x01" * 8
    assert reason_of(bytes(data)) is Reason.SCHEMA_MISMATCH


def test_trailing_bytes_after_a_record_are_a_schema_mismatch():
    assert reason_of(CODEC.encode(factories.signal()) + b"\x00\x01") is Reason.SCHEMA_MISMATCH


def test_unknown_framing_is_a_decode_error():
    assert reason_of(b"\x07hello") is Reason.DECODE_ERROR


@pytest.mark.parametrize(
    "changes",
    [
        {"symbol": ...},
        {"action": ...},
        {"price": ...},
        {"unexpected": 1},
        {"price": "abc"},
        {"price": [1, 2]},
        {"confidence": "1.5"},
        {"rsi": "150"},
        {"action": "hold"},
        {"price": "NaN"},
        {"price": "Infinity"},
        {"price": "-1"},
        {"price": "0"},
        {"volume": "-5"},
        {"symbol": "X" * 5000},
        {"strategy": "s" * 10_000},
        {"timeframe": "7m"},
        {"source_timestamp": "yesterday"},
    ],
)
def test_json_with_missing_extra_or_mistyped_fields_is_a_validation_error(changes):
    assert reason_of(json_body(**changes)) is Reason.VALIDATION_ERROR


def test_nan_in_json_numbers_is_rejected():
    assert reason_of(b'{"symbol": "BTCUSDT", "action": "buy", "price": NaN}') is Reason.VALIDATION_ERROR


def test_invalid_json_and_invalid_utf8_are_decode_errors():
    assert reason_of(b'{"symbol": "BTC') is Reason.DECODE_ERROR
    assert reason_of(b'{"symbol": "\xff\xfe"}') is Reason.DECODE_ERROR


def test_invalid_utf8_inside_an_avro_string_is_a_decode_error():
    data = bytearray(CODEC.encode(factories.signal(strategy="abcdef")))
    index = data.index(b"abcdef")
    data[index : index + 2] = b"\xff\xfe"
    assert reason_of(bytes(data)) is Reason.DECODE_ERROR


def test_json_array_is_not_a_signal():
    assert reason_of(b"[1, 2, 3]") is Reason.VALIDATION_ERROR


def test_content_type_header_marks_json_even_with_leading_whitespace():
    signal = CODEC.decode_signal(
        b"  \n" + json_body(), headers=[("content-type", b"application/json")], fallback_id="x"
    )
    assert signal.symbol == "BTCUSDT"


def test_oversized_message_is_rejected_before_decoding():
    assert reason_of(b"{" + b" " * 2_000_000 + b"}") is Reason.OVERSIZED_MESSAGE


def test_valid_avro_signal_still_decodes():
    signal = factories.signal()
    assert CODEC.decode(CODEC.encode(signal), Signal) == signal
