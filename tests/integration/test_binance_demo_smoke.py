"""Optional smoke test against Binance's real demo environment (demo-fapi.binance.com, through ccxt's
enable_demo_trading): read-only - connectivity, the key, balance, positions and open orders.

Runs only when P95_EXCHANGE__API_KEY (and P95_EXCHANGE__API_SECRET) hold a *demo* key:

    P95_EXCHANGE__API_KEY=... P95_EXCHANGE__API_SECRET=... .venv/bin/pytest tests/integration/test_binance_demo_smoke.py
"""

from __future__ import annotations

import os

import pytest

from phoenix95.connectors.exchange.binance import BinanceExchange
from phoenix95.connectors.exchange.binance_rest import BinanceRest
from phoenix95.connectors.exchange.check import check_account
from phoenix95.settings import ExchangeSettings

pytestmark = pytest.mark.skipif(
    not os.environ.get("P95_EXCHANGE__API_KEY"),
    reason="P95_EXCHANGE__API_KEY is not set: no Binance demo key to smoke-test with (and no network here)",
)


async def test_the_demo_environment_answers_the_check_with_a_demo_key():
    settings = ExchangeSettings(
        kind="binance-demo",
        api_key=os.environ["P95_EXCHANGE__API_KEY"],
        api_secret=os.environ.get("P95_EXCHANGE__API_SECRET", ""),
    )
    rest = BinanceRest(settings)
    try:
        result = await check_account(BinanceExchange(rest, None, settings))  # type: ignore[arg-type]
    finally:
        await rest.close()
    assert result.connectivity, result.fatal
    assert result.fatal is None, result.fatal
    assert result.open_orders is not None
