"""Reading alerts in the shapes TradingView users send, and validating them into signals."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from phoenix95.connectors.webhook.alerts import (
    UnreadableAlert,
    alert_digest,
    alert_secret,
    build_alert_signal,
    parse_alert,
)
from phoenix95.schemas.codec import Codec
from phoenix95.schemas.messages import Signal
from phoenix95.schemas.signal_input import InvalidSignal, build_signal, parse_timestamp


def alert(payload: dict) -> Signal:
    return build_alert_signal(payload, producer="tests", signal_id="sig-1", source="tradingview")


def test_json_alert_keeps_the_exact_decimal_text_of_numbers():
    payload = parse_alert(b'{"ticker": "BTCUSDT", "action": "buy", "close": 65000.10}', "application/json")
    assert payload["close"] == Decimal("65000.10")
    assert str(alert(payload).price) == "65000.10"


def test_tradingview_json_alert_with_aliases_becomes_a_normalised_signal():
    body = json.dumps(
        {
            "passphrase": "s3cret",
            "ticker": "BINANCE:BTCUSDT.P",
            "strategy": {"order": {"action": "BUY"}},
            "close": "65000.5",
            "interval": "60",
            "timenow": "2026-01-05T12:00:00Z",
        }
    ).encode()
    signal = alert(parse_alert(body, "application/json"))
    assert (signal.symbol, signal.action, str(signal.price), signal.timeframe) == ("BTCUSDT", "buy", "65000.5", "1h")
    assert signal.source_timestamp == datetime(2026, 1, 5, 12, tzinfo=UTC)
    assert signal.source == "tradingview"


def test_text_plain_key_value_lines_are_read_with_lower_cased_keys():
    body = b"passphrase=s3cret\nTicker=BINANCE:ETHUSDT.P\naction = sell\nclose: 3000.25\ntime=2026-01-05T12:00:00Z"
    payload = parse_alert(body, "text/plain")
    assert payload == {
        "passphrase": "s3cret",
        "ticker": "BINANCE:ETHUSDT.P",
        "action": "sell",
        "close": "3000.25",
        "time": "2026-01-05T12:00:00Z",
    }
    assert alert(payload).symbol == "ETHUSDT"


@pytest.mark.parametrize(
    "body",
    [
        b"ticker=XRPUSDT, action=buy, price=1.19",
        b"ticker=XRPUSDT; action=buy; price=1.19",
        b"ticker=XRPUSDT&action=buy&price=1.19",
        b"ticker: XRPUSDT\r\naction: buy\r\nprice: '1.19'",
    ],
)
def test_key_value_pairs_accept_the_usual_separators(body):
    assert parse_alert(body, "text/plain") == {"ticker": "XRPUSDT", "action": "buy", "price": "1.19"}


def test_a_comma_inside_a_value_does_not_split_the_pair():
    assert parse_alert(b"comment=Long, first entry, price=2", "text/plain") == {
        "comment": "Long, first entry",
        "price": "2",
    }


def test_json_looking_text_with_an_unquoted_timenow_is_read():
    # What TradingView sends as text/plain when {{timenow}} was left unquoted in a JSON message.
    body = b'{"ticker": "XRPUSDT", "action": "buy", "price": 1.19, "timenow": 2026-01-05T12:00:00Z,}'
    payload = parse_alert(body, "text/plain")
    assert payload["timenow"] == "2026-01-05T12:00:00Z"
    assert alert(payload).source_timestamp == datetime(2026, 1, 5, 12, tzinfo=UTC)


def test_json_looking_text_with_single_quotes_and_bare_keys_is_read():
    payload = parse_alert(b"{ticker: 'XRPUSDT', action: buy\n price = 1.19 }", "text/plain")
    assert payload == {"ticker": "XRPUSDT", "action": "buy", "price": "1.19"}


def test_form_encoded_body_is_read_as_pairs():
    payload = parse_alert(b"ticker=XRPUSDT&action=buy&price=1.19&passphrase=a%2Bb", "application/x-www-form-urlencoded")
    assert payload["passphrase"] == "a+b"


def test_json_sent_with_a_form_content_type_is_still_json():
    assert parse_alert(b'{"a": "b"}', "application/x-www-form-urlencoded") == {"a": "b"}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"", "empty"),
        (b"   ", "empty"),
        (b'{"ticker": "XRPUSDT", "price": ', "invalid JSON"),
        (b'{"ticker" "XRPUSDT"}', "invalid JSON"),
        (b"[1, 2]", "not an array"),
        (b"buy XRPUSDT now", "not JSON and not key=value"),
        (b"\xff\xfe\x00", "not UTF-8"),
    ],
)
def test_unreadable_bodies_are_named_as_the_body(body, fragment):
    with pytest.raises(UnreadableAlert) as caught:
        parse_alert(body, "text/plain")
    assert caught.value.errors[0][0] == "body"
    assert fragment in str(caught.value)


def test_unreplaced_placeholder_is_named_with_its_field():
    payload = parse_alert(b'{"ticker": "XRPUSDT", "action": "buy", "price": {{close}}}', "text/plain")
    with pytest.raises(InvalidSignal) as caught:
        alert(payload)
    assert caught.value.errors == [
        ("price", "TradingView placeholder {{close}} was not replaced; check the alert message")
    ]


def test_informational_tradingview_fields_are_ignored_but_kept_in_raw():
    payload = {
        "passphrase": "s3cret",
        "ticker": "XRPUSDT",
        "exchange": "BINANCE",
        "action": "buy",
        "price": "1.19",
        "contracts": "10",
        "position_size": "10",
        "plot_0": "42",
        "strategy.position_size": "10",
    }
    signal = alert(payload)
    raw = json.loads(signal.raw or "{}")
    assert raw["exchange"] == "BINANCE" and raw["plot_0"] == "42"
    assert "passphrase" not in raw


def test_unknown_fields_are_still_rejected_by_name():
    with pytest.raises(InvalidSignal) as caught:
        alert({"ticker": "XRPUSDT", "action": "buy", "price": "1.19", "pirce": "1.2"})
    assert caught.value.errors == [("pirce", "unknown field")]


def test_wrong_values_name_their_fields():
    with pytest.raises(InvalidSignal) as caught:
        alert({"ticker": "XRPUSDT", "action": "hold", "price": "-1"})
    assert {name for name, _ in caught.value.errors} == {"action", "price"}


def test_errors_name_a_field_as_the_alert_spells_it():
    with pytest.raises(InvalidSignal) as caught:
        alert({"ticker": "X", "strategy": {"order": {"action": "hold"}}, "close": "-1", "interval": "3"})
    assert {name for name, _ in caught.value.errors} == {"ticker", "strategy.order.action", "close", "interval"}


def test_nan_from_a_tradingview_plot_is_rejected():
    with pytest.raises(InvalidSignal) as caught:
        alert(parse_alert(b'{"ticker": "XRPUSDT", "action": "buy", "price": NaN}', "application/json"))
    assert caught.value.errors[0][0] == "price"


def test_strategy_order_price_is_a_price_alias():
    signal = alert({"ticker": "XRPUSDT", "strategy": {"order": {"action": "sell", "price": "1.25"}}})
    assert (signal.action, str(signal.price)) == ("sell", "1.25")


def test_the_secret_is_found_under_each_accepted_name():
    for name in ("passphrase", "secret", "token", "key"):
        assert alert_secret({name: "abc", "ticker": "XRPUSDT"}) == "abc"
    assert alert_secret({"ticker": "XRPUSDT"}) is None


def test_build_signal_never_copies_the_secret_into_raw():
    signal = build_signal(
        {"symbol": "XRPUSDT", "action": "buy", "price": "1.19", "passphrase": "s3cret"},
        producer="tests",
        signal_id="sig-2",
        keep_raw=True,
    )
    assert "s3cret" not in (signal.raw or "")


def test_the_same_alert_as_json_and_as_text_has_one_digest():
    as_json = parse_alert(b'{"ticker": "BINANCE:XRPUSDT.P", "action": "BUY", "price": "1.19"}', "application/json")
    as_text = parse_alert(b"price=1.19\naction=buy\nticker=XRPUSDT\npassphrase=whatever", "text/plain")
    assert alert_digest(as_json) == alert_digest(as_text)
    assert alert_digest(as_json) != alert_digest({**as_json, "price": "1.20"})
    assert alert_digest(as_json, scope="a") != alert_digest(as_json, scope="b")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-05T12:00:00Z", datetime(2026, 1, 5, 12, tzinfo=UTC)),
        ("2026-01-05 12:00:00", datetime(2026, 1, 5, 12, tzinfo=UTC)),
        ("1767614400", datetime(2026, 1, 5, 12, tzinfo=UTC)),
        ("1767614400000", datetime(2026, 1, 5, 12, tzinfo=UTC)),
    ],
)
def test_tradingview_timestamps_are_read_as_utc(value, expected):
    assert parse_timestamp(value) == expected


def test_the_codec_still_reads_json_signals_from_the_topic():
    signal = Codec().decode_signal(
        b'{"ticker": "BINANCE:ETHUSDT.P", "action": "SELL", "close": 3000.5}', fallback_id="x"
    )
    assert (signal.symbol, signal.action, signal.signal_id) == ("ETHUSDT", "sell", "x")


def test_the_raw_copy_of_an_oversized_payload_stays_valid_json_within_the_contract():
    from phoenix95.schemas.signal_input import RAW_MAX_CHARS, raw_copy

    payload = {"symbol": "BTCUSDT", "action": "buy", "price": "65000", "comment": "가격 " * 30_000}
    text = raw_copy(payload)
    kept = json.loads(text)
    assert len(text) <= RAW_MAX_CHARS
    assert kept["truncated"] is True and kept["chars"] > RAW_MAX_CHARS and kept["head"].startswith('{"action"')
    small = {"symbol": "BTCUSDT", "comment": "가격"}
    assert json.loads(raw_copy(small)) == small
