"""Apprise URLs carry tokens and passwords: never print or log one unmasked."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


@contextmanager
def quiet_apprise() -> Iterator[None]:
    """Apprise logs a URL it cannot parse in full (secrets included): silence it while parsing."""
    log = logging.getLogger("apprise")
    level = log.level
    log.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        log.setLevel(level)


def mask_url(url: str) -> str:
    """The URL as Apprise prints it in privacy mode (tokens and passwords elided, hosts kept), without
    the defaults Apprise appends; `scheme://****` when Apprise cannot parse it."""
    try:
        import apprise

        with quiet_apprise():
            plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
    except Exception:
        plugin = None
    if plugin is not None:
        try:
            return str(plugin.url(privacy=True)).split("?", 1)[0]
        except Exception:
            pass
    match = _SCHEME.match(url)
    return f"{match.group(1)}://****" if match else "****"
