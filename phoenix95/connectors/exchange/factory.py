"""The exchange connector chosen by ``P95_EXCHANGE__KIND`` (default ``paper``)."""

from __future__ import annotations

from typing import Any

from phoenix95.connectors.exchange.base import ExchangeConnector
from phoenix95.domain.config import TradingConfig
from phoenix95.settings import Settings
from phoenix95.storage.postgres import Database


class ExchangeConfigError(ValueError):
    """The exchange settings cannot trade (missing keys, live without confirmation)."""


def build_exchange(
    settings: Settings, database: Database, config: TradingConfig, *, publisher: Any = None
) -> ExchangeConnector:
    if not settings.exchange.live():
        from phoenix95.connectors.exchange.paper import PaperExchange

        return PaperExchange(database, config)
    problems = settings.exchange.problems()
    if problems:
        raise ExchangeConfigError("; ".join(problems))
    from phoenix95.connectors.exchange.live import LiveExchange

    return LiveExchange(settings, database, symbols=sorted(config.allowed_symbols), publisher=publisher)
