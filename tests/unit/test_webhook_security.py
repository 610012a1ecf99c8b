"""The webhook's pure decisions: who is asking, which secret matches, how old an alert is."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from phoenix95.connectors.webhook import (
    TRADINGVIEW_IPS,
    SecretBook,
    age_problem,
    client_address,
    parse_networks,
    presented_secret,
    retry_after,
    signal_source,
)
from phoenix95.connectors.webhook.alerts import build_alert_signal

PROXIES = parse_networks(["10.0.0.0/8", "127.0.0.1"])


def test_tradingview_preset_names_its_four_addresses():
    networks = parse_networks(["tradingview"])
    assert [str(n.network_address) for n in networks] == list(TRADINGVIEW_IPS)
    assert parse_networks(["TradingView", "192.168.0.0/16"])[-1] == ipaddress.ip_network("192.168.0.0/16")


def test_a_bad_allowlist_entry_is_named():
    with pytest.raises(ValueError, match="'tradingveiw' is not an IP address"):
        parse_networks(["tradingveiw"])


def test_forwarded_for_is_ignored_when_the_peer_is_not_a_trusted_proxy():
    assert client_address("203.0.113.9", "52.89.214.238", PROXIES) == "203.0.113.9"


def test_forwarded_for_from_a_trusted_proxy_gives_the_client():
    assert client_address("10.1.2.3", "52.89.214.238", PROXIES) == "52.89.214.238"


def test_entries_a_client_forged_left_of_the_real_one_are_not_believed():
    # The client sent "X-Forwarded-For: 52.89.214.238"; our proxy appended the real address.
    assert client_address("10.1.2.3", "52.89.214.238, 198.51.100.7", PROXIES) == "198.51.100.7"


def test_a_chain_of_trusted_proxies_is_walked_from_the_right():
    assert client_address("127.0.0.1", "34.212.75.30, 10.9.9.9", PROXIES) == "34.212.75.30"


def test_no_forwarded_for_means_the_peer():
    assert client_address("10.1.2.3", None, PROXIES) == "10.1.2.3"


def test_the_matching_secret_names_its_source():
    book = SecretBook({"tradingview": SecretStr("tv-secret-0123456789"), "mt5": "mt5-secret-0123456789"})
    assert book.source_for("tv-secret-0123456789") == "tradingview"
    assert book.source_for("mt5-secret-0123456789") == "mt5"


@pytest.mark.parametrize(
    "presented", [None, "", "tv-secret-012345678", "tv-secret-0123456789 ", "TV-SECRET-0123456789"]
)
def test_a_missing_or_wrong_secret_matches_no_source(presented):
    assert SecretBook({"tradingview": "tv-secret-0123456789"}).source_for(presented) is None


def test_an_empty_configured_secret_never_matches():
    book = SecretBook({"tradingview": ""})
    assert not book
    assert book.source_for("") is None


def test_the_header_secret_wins_over_the_body():
    body = {"passphrase": "from-body"}
    assert presented_secret({"x-p95-secret": "from-header"}, body) == "from-header"
    assert presented_secret({"authorization": "Bearer from-bearer"}, body) == "from-bearer"
    assert presented_secret({}, body) == "from-body"
    assert presented_secret({"authorization": "Basic abc"}, {}) is None


def test_sources_outside_the_contract_become_custom():
    assert signal_source("TradingView") == "tradingview"
    assert signal_source("my-strategy") == "custom"


def _signal_at(when: datetime | None):
    payload = {"ticker": "XRPUSDT", "action": "buy", "price": "1.19"}
    if when is not None:
        payload["timenow"] = when.isoformat()
    return build_alert_signal(payload, producer="tests", signal_id="s", source="tradingview")


def test_an_alert_older_than_the_limit_is_stale():
    now = datetime(2026, 1, 5, 12, tzinfo=UTC)
    assert age_problem(_signal_at(now - timedelta(seconds=299)), now.timestamp(), 300) is None
    problem = age_problem(_signal_at(now - timedelta(seconds=301)), now.timestamp(), 300)
    assert problem is not None and "301 s old" in problem


def test_an_alert_far_in_the_future_is_refused_and_one_without_timestamp_is_not():
    now = datetime(2026, 1, 5, 12, tzinfo=UTC)
    assert "future" in (age_problem(_signal_at(now + timedelta(hours=1)), now.timestamp(), 300) or "")
    assert age_problem(_signal_at(None), now.timestamp(), 300) is None


def test_retry_after_points_at_the_next_minute():
    assert retry_after(1_800_000_000.0) == 60  # exactly on a minute boundary
    assert retry_after(1_800_000_059.5) == 1
    assert retry_after(1_800_000_030.0) == 30
