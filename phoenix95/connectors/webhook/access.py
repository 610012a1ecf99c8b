"""Who is asking: the client's address (allowlist, trusted proxies) and which source's secret it presented."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any, get_args

from pydantic import SecretStr

from phoenix95.connectors.webhook.alerts import alert_secret
from phoenix95.schemas.messages import Source

#: TradingView's published webhook source addresses (https://www.tradingview.com/support/solutions/43000529348).
TRADINGVIEW_IPS = ("52.89.214.238", "34.212.75.30", "54.218.53.128", "52.32.178.7")
#: Names accepted in ``allow_ips`` for a published set of addresses.
IP_PRESETS: dict[str, tuple[str, ...]] = {"tradingview": TRADINGVIEW_IPS}
SECRET_HEADER = "x-p95-secret"
_SOURCES = frozenset(get_args(Source))

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """Addresses, CIDR blocks and preset names (``tradingview``) -> networks; ValueError names a bad entry."""
    networks: list[Network] = []
    for entry in entries:
        name = entry.strip()
        for item in IP_PRESETS.get(name.lower(), (name,)):
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                presets = ", ".join(IP_PRESETS)
                raise ValueError(f"{entry!r} is not an IP address, a CIDR block or a preset ({presets})") from None
    return tuple(networks)


def _within(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


def client_address(peer: str | None, forwarded_for: str | None, trusted_proxies: tuple[Network, ...]) -> str | None:
    """The client's address: the peer, unless the peer is a trusted proxy; then the right-most
    ``X-Forwarded-For`` entry that is not itself a trusted proxy (entries further left are whatever
    the client chose to send)."""
    if peer is None or not forwarded_for or not _within(peer, trusted_proxies):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _within(hop, trusted_proxies):
            return hop
    return hops[0] if hops else peer


class SecretBook:
    """Per-source secrets. `source_for` compares what was presented with every secret, in constant
    time and without stopping at a match, and returns the matching source (or None)."""

    def __init__(self, secrets: Mapping[str, SecretStr | str]):
        self._digests = [
            (source, hashlib.sha256(_secret_text(secret).encode()).digest())
            for source, secret in secrets.items()
            if _secret_text(secret)
        ]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def source_for(self, presented: str | None) -> str | None:
        if presented is None:
            return None
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for source, expected in self._digests:
            if hmac.compare_digest(digest, expected):
                found = source
        return found


def _secret_text(secret: SecretStr | str) -> str:
    return secret.get_secret_value() if isinstance(secret, SecretStr) else secret


def presented_secret(headers: Mapping[str, str], payload: Mapping[str, Any]) -> str | None:
    header = headers.get(SECRET_HEADER)
    if header:
        return header
    authorization = headers.get("authorization", "")
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return alert_secret(payload)


def signal_source(source_name: str) -> str:
    """The `Signal.source` of alerts from a configured source: its own name when the contract knows
    it (``tradingview``, ``mt5``, ...), else ``custom``."""
    name = source_name.lower()
    return name if name in _SOURCES else "custom"
