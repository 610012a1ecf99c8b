"""What `p95 tap` prints for a record: the JSON envelope (kcat -J in spirit), the pretty block,
raw bytes, --fields; every message type decoded; undecodable bytes shown raw with the error."""

from __future__ import annotations

import base64
import json

import pytest

from phoenix95.schemas.codec import Codec
from phoenix95.tap.decode import Decoder
from phoenix95.tap.filters import FilterSpec
from phoenix95.tap.output import FieldSelection, JsonFormatter, PrettyFormatter, RawFormatter, formatter_for
from phoenix95.tap.render import Renderer, RenderOptions
from tests.unit.samples import samples

CODEC = Codec()
DECODER = Decoder(CODEC)


def raw_record(value, *, key=b"BTCUSDT", headers=None, topic="t1.p95.orders", partition=2, offset=17):
    return (topic, partition, offset, 1795535710752, key, headers if headers is not None else [], value)


def as_json(record) -> dict:
    line = JsonFormatter().format(record, DECODER.decode(record[6], record[5]))
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    return json.loads(line)


def test_json_envelope_has_the_message_coordinates_headers_and_decoded_value():
    order = samples()[3]
    record = raw_record(
        CODEC.encode(order),
        headers=[("p95-schema", b"phoenix95.Order.v1"), ("p95-correlation-id", order.correlation_id.encode())],
    )
    envelope = as_json(record)
    assert list(envelope) == ["topic", "partition", "offset", "timestamp", "key", "headers", "schema", "value"]
    assert envelope["topic"] == "t1.p95.orders"
    assert (envelope["partition"], envelope["offset"], envelope["timestamp"]) == (2, 17, 1795535710752)
    assert envelope["key"] == "BTCUSDT"
    assert envelope["headers"] == {"p95-schema": "phoenix95.Order.v1", "p95-correlation-id": order.correlation_id}
    assert envelope["schema"] == "phoenix95.Order.v2"
    value = envelope["value"]
    assert value["order_id"] == order.order_id
    assert value["quantity"] == format(order.quantity, "f")  # decimals stay strings
    assert value["fill"]["filled_at"] == order.fill.filled_at.isoformat()  # times: ISO-8601
    assert value["ts_event"] == order.ts_event.isoformat()


@pytest.mark.parametrize("event", samples(), ids=lambda e: e.SCHEMA_NAME)
def test_every_message_type_decodes_to_its_fields(event):
    envelope = as_json(raw_record(CODEC.encode(event)))
    assert envelope["schema"] == f"{event.SCHEMA_NAME}.v{event.SCHEMA_VERSION}"
    assert "error" not in envelope
    assert envelope["value"]["event_id"] == event.event_id
    assert set(envelope["value"]) == set(type(event).model_fields)


def test_dead_letter_bytes_fields_show_as_text_or_base64():
    dead = samples()[-1]
    value = as_json(raw_record(CODEC.encode(dead)))["value"]
    assert value["original_key"] == "BTCUSDT"
    assert value["original_value"] == {"base64": base64.b64encode(b"\x00garbage").decode()}
    assert value["original_headers"] == [{"key": "content-type", "value": "x"}]


def test_undecodable_message_is_shown_raw_with_the_decode_error():
    garbage = b"\xc3\x01" + b"\x11" * 8 + b"not avro"
    envelope = as_json(raw_record(garbage))
    assert envelope["value"] is None
    assert envelope["schema"] is None
    assert envelope["error"].startswith("SCHEMA_MISMATCH: unknown schema fingerprint")
    assert base64.b64decode(envelope["raw"]) == garbage


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (b"", "EMPTY_MESSAGE"),
        (b"\x07hello", "DECODE_ERROR: unknown framing"),
        (b'{"symbol": "XRPUSDT", "price": ', "DECODE_ERROR: invalid JSON"),
        (CODEC.encode(samples()[0])[:-3], "DECODE_ERROR"),
    ],
    ids=["empty", "unknown-framing", "truncated-json", "truncated-avro"],
)
def test_every_kind_of_bad_bytes_gives_an_error_never_an_exception(value, error):
    envelope = as_json(raw_record(value))
    assert envelope["value"] is None
    assert envelope["error"].startswith(error.split(":")[0]) and error in envelope["error"]
    assert base64.b64decode(envelope["raw"]) == value


def test_json_signal_is_decoded_as_json():
    envelope = as_json(raw_record(b'{"symbol": "XRPUSDT", "action": "buy", "price": "1.19"}', topic="p95.signals"))
    assert envelope["schema"] == "json"
    assert envelope["value"] == {"symbol": "XRPUSDT", "action": "buy", "price": "1.19"}


def test_tombstone_has_a_null_value_and_no_error():
    envelope = as_json(raw_record(None, key=None))
    assert envelope["value"] is None and envelope["key"] is None
    assert "error" not in envelope


def test_binary_key_and_header_become_base64_and_repeated_headers_a_list():
    envelope = as_json(raw_record(b"{}", key=b"\xff\x00", headers=[("h", b"a"), ("h", b"\xfe"), ("n", None)]))
    assert envelope["key"] == {"base64": base64.b64encode(b"\xff\x00").decode()}
    assert envelope["headers"] == {"h": ["a", {"base64": base64.b64encode(b"\xfe").decode()}], "n": None}


def test_fields_select_values_nested_values_and_message_fields():
    verdict = samples()[2]
    record = raw_record(CODEC.encode(verdict), topic="t1.p95.risk.verdicts")
    formatter = JsonFormatter(FieldSelection(["decision", "plan.notional", "reasons", "$offset", "missing"]))
    envelope = json.loads(formatter.format(record, DECODER.decode(record[6], record[5])))
    assert envelope["value"] == {
        "decision": verdict.decision,
        "plan.notional": format(verdict.plan.notional, "f"),
        "reasons": list(verdict.reasons),
        "$offset": 17,
        "missing": None,
    }


def test_raw_prints_the_value_bytes_as_they_are():
    data = CODEC.encode(samples()[0])
    record = raw_record(data)
    assert RawFormatter().format(record, DECODER.decode(data, [])) == data + b"\n"
    with pytest.raises(ValueError, match="--fields does not apply to --format raw"):
        formatter_for("raw", fields=["symbol"])


def test_pretty_block_has_a_metadata_line_and_nested_fields():
    verdict = samples()[2]
    record = raw_record(CODEC.encode(verdict), topic="t1.p95.risk.verdicts", headers=[("p95-schema", b"x")])
    text = PrettyFormatter(color=False).format(record, DECODER.decode(record[6], record[5])).decode()
    lines = text.splitlines()
    assert lines[0] == "t1.p95.risk.verdicts [2] @17  2026-11-24T15:55:10.752Z  key BTCUSDT  phoenix95.RiskVerdict.v1"
    assert lines[1].strip() == "headers  p95-schema=x"
    assert any(line.split() == ["decision", verdict.decision] for line in lines)
    plan_line = lines.index("  plan")
    assert lines[plan_line + 1].split()[0] == "entry_price"  # nested record indented under its name
    assert "\x1b[" not in text


def test_pretty_block_of_an_undecodable_message_shows_error_and_hex():
    record = raw_record(b"\x07hello")
    text = PrettyFormatter(color=True).format(record, DECODER.decode(record[6], record[5])).decode()
    assert "DECODE_ERROR: unknown framing" in text
    assert "07 68 65 6c 6c 6f" in text and ".hello" in text and "(6 bytes)" in text
    assert "\x1b[" in text  # coloured


def test_renderer_applies_filters_before_formatting():
    signal, analysis = samples()[0], samples()[1]
    records = [
        raw_record(CODEC.encode(signal), offset=1, headers=[("p95-correlation-id", signal.signal_id.encode())]),
        raw_record(CODEC.encode(analysis), offset=2, headers=[("p95-correlation-id", b"another-signal")]),
        raw_record(b"\x07junk", offset=3),
    ]
    shown = Renderer(RenderOptions(filters=FilterSpec(signals=(signal.signal_id,)))).render(records)
    assert [json.loads(line)["offset"] for line in shown] == [1]
    shown = Renderer(RenderOptions(filters=FilterSpec(where="$error != null"))).render(records)
    assert [json.loads(line)["offset"] for line in shown] == [3]


def envelope_of(event) -> dict:
    record = raw_record(CODEC.encode(event), headers=[("p95-correlation-id", event.correlation_id.encode())])
    decoded = DECODER.decode(record[6], record[5])
    return {"topic": record[0], "key": "BTCUSDT", "schema": decoded.schema, "value": decoded.value, "bin": b"\xff"}


@pytest.mark.parametrize("event", samples(), ids=lambda e: e.SCHEMA_NAME)
def test_orjson_and_the_standard_library_write_the_same_bytes(event):
    orjson = pytest.importorskip("orjson")
    from phoenix95.tap.encoding import json_default, stdlib_line

    envelope = envelope_of(event)
    fast = orjson.dumps(envelope, default=json_default, option=orjson.OPT_APPEND_NEWLINE)
    assert fast == stdlib_line(envelope)


def test_json_lines_keep_non_ascii_text_and_fall_back_for_huge_integers():
    from phoenix95.tap.encoding import json_line

    line = json_line({"text": "µs → ok", "big": 2**70, "when": samples()[0].ts_event})
    assert line.endswith(b"\n")
    assert json.loads(line) == {"text": "µs → ok", "big": 2**70, "when": samples()[0].ts_event.isoformat()}
    assert "µs → ok".encode() in line


@pytest.fixture
def schema_registry():
    from tests.registry import serve_registry

    with serve_registry() as url:
        yield url


def test_confluent_framed_messages_are_decoded_through_the_schema_registry(schema_registry):
    from phoenix95.schemas.registry import SchemaRegistryClient

    order = samples()[3]
    data = Codec(registry=SchemaRegistryClient(schema_registry)).encode(order)
    assert data[0] == 0  # Confluent framing: 00 + schema id
    shown = Renderer(RenderOptions(schema_registry_url=schema_registry)).render([raw_record(data)])
    envelope = json.loads(shown[0])
    assert envelope["schema"] == "phoenix95.Order.v2"
    assert envelope["value"]["order_id"] == order.order_id

    without_registry = json.loads(Renderer(RenderOptions()).render([raw_record(data)])[0])
    assert without_registry["value"] is None
    assert "no schema registry configured" in without_registry["error"]
