"""`p95 risk quote --json` against the real stores and broker: the verdict the risk stage would give
now, with the recent prices it would have (the tail of p95.market.prices, else the bundled candles),
so the plan carries a one-day VaR; without publishing or joining anything."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from phoenix95.connectors.kafka_admin import end_offsets, list_groups
from phoenix95.connectors.market_data import CandleReplay
from phoenix95.domain.volatility import daily_volatility, value_at_risk
from tests import factories
from tests.pipeline import Pipeline

pytestmark = pytest.mark.integration


def quote(*args: str):
    from phoenix95.cli.main import app

    return CliRunner().invoke(app, ["risk", "quote", *args])


def quote_json(*args: str) -> dict:
    result = quote(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def live(namespace):
    """The namespace's topics and PostgreSQL schema, with no workers: the quote reads what is there."""
    pipeline = Pipeline(namespace)
    asyncio.run(pipeline.prepare())
    return pipeline


def random_walk(symbol: str, first: Decimal, count: int, *, seed: int) -> list:
    rng = random.Random(seed)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=count)
    value, prices = first, []
    for index in range(count):
        value = (value * Decimal(str(1 + rng.gauss(0, 0.002)))).quantize(Decimal("0.1"))
        prices.append(factories.price(symbol=symbol, value=value, at=start + timedelta(minutes=index)))
    return prices


@pytest.mark.parametrize(
    ("side", "stop", "target", "liquidation"),
    [
        # 0.5 BTC (15 % of 10,000 as margin, 20x): LP = (1,500 - s x 30,000) / (0.5 x 0.4 % - s x 0.5)
        ("long", "58800.00", "61200.00", "57228.91566265"),
        ("short", "61200.00", "58800.00", "62749.00398406"),
    ],
)
def test_a_btcusdt_quote_prints_the_plan_the_risk_stage_would_approve(live, side, stop, target, liquidation):
    result = quote_json("--symbol", "BTCUSDT", "--side", side, "--price", "60000", "--confidence", "0.9")
    assert result["decision"] == "APPROVED" and result["reasons"] == []
    assert result["symbol"] == "BTCUSDT" and result["side"] == side and result["trading_state"] == "ACTIVE"
    assert result["state_from"] == f"live state (schema {live.ns.schema})"
    plan = result["plan"]
    assert Decimal(plan["quantity"]) == Decimal("0.5") and Decimal(plan["notional"]) == Decimal(30000)
    assert Decimal(plan["initial_margin"]) == Decimal(1500) and plan["leverage"] == 20
    assert (plan["stop_loss_price"], plan["take_profit_price"]) == (stop, target)
    assert plan["liquidation_price"] == liquidation
    assert (Decimal(liquidation) < 60000) is (side == "long")
    # no BTCUSDT prices on the broker and none bundled: no volatility, no VaR
    assert result["market"]["prices"] == 0 and plan["var_1d_95"] is None


def test_a_low_confidence_quote_is_rejected_with_every_reason(live):
    result = quote_json("--symbol", "BTCUSDT", "--side", "long", "--price", "60000", "--confidence", "0.1")
    assert result["decision"] == "REJECTED"
    # score 0.13 < 0.45; Kelly at p = 0.13 is negative: nothing to size
    assert result["reasons"] == ["CONFIDENCE_BELOW_MIN", "SCORE_BELOW_THRESHOLD", "POSITION_SIZE_ZERO"]
    assert result["phoenix95_score"] == "0.1300"
    assert Decimal(result["plan"]["quantity"]) == 0


def test_the_quote_has_a_var_from_the_symbols_recent_prices_on_the_broker(live, services):
    btc = random_walk("BTCUSDT", Decimal(60000), 80, seed=1)
    eth = random_walk("ETHUSDT", Decimal(3000), 40, seed=2)
    asyncio.run(live.publish(sorted([*btc, *eth], key=lambda p: p.ts_event)))
    topics = live.topics.all()
    before = asyncio.run(end_offsets(services.kafka, topics))
    groups = asyncio.run(list_groups(services.kafka))

    result = quote_json("--symbol", "BTCUSDT", "--side", "long", "--price", "60000", "--confidence", "0.9")
    market, plan = result["market"], result["plan"]
    assert market["prices"] == 80 and market["from"] == f"the broker, {live.topics.market_prices}"
    assert market["last_price"] == str(btc[-1].price)
    volatility = daily_volatility([(p.ts_event, p.price) for p in btc])
    assert volatility is not None and Decimal(market["daily_volatility"]) == volatility
    # VaR = notional x 1.6449 x daily volatility
    var = value_at_risk(Decimal(plan["notional"]), volatility)
    assert var is not None and Decimal(plan["var_1d_95"]) == var.quantize(Decimal("0.00000001"))
    # it published nothing and joined no consumer group
    assert asyncio.run(end_offsets(services.kafka, topics)) == before
    assert asyncio.run(list_groups(services.kafka)) == groups


def test_an_offline_quote_takes_its_var_from_the_bundled_candles(namespace):
    result = quote_json("--symbol", "XRPUSDT", "--side", "short", "--price", "1.19", "--confidence", "0.9", "--offline")
    assert result["decision"] == "APPROVED" and result["state_from"] == "offline: a fresh paper account"
    market = result["market"]
    assert market["from"] == "offline; bundled candles XRPUSDT-5m-futures_last.csv.gz" and market["prices"] == 301
    last = CandleReplay.bundled("XRPUSDT").ticks()[-301:]
    volatility = daily_volatility([(t.time, t.price) for t in last])
    assert volatility is not None and Decimal(market["daily_volatility"]) == volatility
    var = value_at_risk(Decimal(result["plan"]["notional"]), volatility)
    assert var is not None and Decimal(result["plan"]["var_1d_95"]) == var.quantize(Decimal("0.00000001"))


def test_a_quote_sees_the_live_trading_state(live):
    from phoenix95.cli.main import app

    assert CliRunner().invoke(app, ["halt", "--reason", "quote test"]).exit_code == 0
    result = quote_json("--symbol", "BTCUSDT", "--side", "long", "--price", "60000", "--confidence", "0.9")
    assert result["decision"] == "REJECTED" and result["reasons"] == ["TRADING_HALTED"]
    assert result["trading_state"] == "HALTED"


def test_a_bracket_file_from_the_settings_moves_the_quoted_liquidation_price(namespace, tmp_path: Path, monkeypatch):
    brackets = [
        {
            "bracket": 1,
            "initialLeverage": 50,
            "notionalCap": 10**9,
            "notionalFloor": 0,
            "maintMarginRatio": 0.01,
            "cum": 0,
        }
    ]
    path = tmp_path / "brackets.json"
    path.write_text(json.dumps([{"symbol": "BTCUSDT", "brackets": brackets}]))
    args = ("--symbol", "BTCUSDT", "--side", "long", "--price", "60000", "--confidence", "0.9", "--offline")
    bundled = quote_json(*args)["plan"]
    monkeypatch.setenv("P95_RISK__BRACKETS_FILE", str(path))
    from phoenix95.settings import get_settings

    get_settings.cache_clear()
    refreshed = quote_json(*args)["plan"]
    assert bundled["liquidation_price"] == "57228.91566265"
    # (1,500 - 30,000) / (0.5 x 1 % - 0.5)
    assert refreshed["liquidation_price"] == "57575.75757576" and refreshed["maint_margin_ratio"] == "0.01"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--symbol", "FOOUSDT", "--side", "long", "--price", "1"), "unknown symbol FOOUSDT"),
        (("--symbol", "BTCUSDT", "--side", "long", "--price", "abc"), "price: Input should be a valid decimal"),
        (("--symbol", "BTCUSDT", "--side", "long", "--price", "-5"), "price: Input should be greater than 0"),
        (
            ("--symbol", "BTCUSDT", "--side", "long", "--price", "1e30"),
            "price: Input should be less than 1000000000000",
        ),
        (("--symbol", "BTCUSDT", "--side", "up", "--price", "60000"), "--side must be long or short"),
    ],
)
def test_a_bad_quote_request_is_a_clear_error_without_a_traceback(namespace, args, message):
    result = quote(*args, "--confidence", "0.9", "--offline", "--json")
    assert result.exit_code == 2
    assert message in " ".join(result.stderr.split()) and result.stdout == ""
    assert "Traceback" not in result.output
