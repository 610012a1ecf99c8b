"""Liquidation price and margins as Binance USDⓈ-M computes them (isolated, one-way)."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from phoenix95.connectors.exchange.brackets import bundled_brackets
from phoenix95.domain.brackets import Bracket
from phoenix95.domain.margin import initial_margin, liquidation_price, maintenance_margin

BTC = bundled_brackets().for_symbol("BTCUSDT")
CENT = Decimal("0.01")


def test_worked_example_long_btc_liquidates_at_57228_92():
    quote = liquidation_price(
        side="long", quantity=Decimal("0.1"), entry_price=Decimal(60000), wallet_balance=Decimal(300), brackets=BTC
    )
    assert quote.price.quantize(CENT) == Decimal("57228.92")
    assert quote.bracket.bracket == 1
    assert quote.bracket.maint_margin_ratio == Decimal("0.004")


def test_worked_example_short_btc_liquidates_at_62749_00():
    quote = liquidation_price(
        side="short", quantity=Decimal("0.1"), entry_price=Decimal(60000), wallet_balance=Decimal(300), brackets=BTC
    )
    assert quote.price.quantize(CENT) == Decimal("62749.00")


def test_liquidation_is_recomputed_with_the_bracket_of_the_notional_at_the_liquidation_price():
    # A long whose entry notional sits just above bracket 1 (50,000) liquidates below it: the price
    # is recomputed with bracket 1's MMR and cum.
    brackets = (
        Bracket(1, 125, Decimal(0), Decimal(50000), Decimal("0.004"), Decimal(0)),
        Bracket(2, 100, Decimal(50000), Decimal(600000), Decimal("0.005"), Decimal(50)),
    )
    quantity, entry = Decimal(1), Decimal(51000)
    quote = liquidation_price(
        side="long", quantity=quantity, entry_price=entry, wallet_balance=Decimal(2550), brackets=brackets
    )
    assert quote.bracket.bracket == 1
    expected = (Decimal(2550) + 0 - quantity * entry) / (quantity * Decimal("0.004") - quantity)
    assert quote.price == expected
    assert quote.price * quantity < Decimal(50000)


def test_maintenance_margin_uses_the_cum_amount_of_the_bracket():
    bracket = BTC[1]  # 50k-600k, MMR 0.5 %, cum 50
    assert maintenance_margin(Decimal(100000), bracket) == Decimal(100000) * Decimal("0.005") - Decimal(50)
    assert initial_margin(Decimal(100000), 20) == Decimal(5000)


quantities = st.decimals(min_value=Decimal("0.001"), max_value=Decimal("50"), places=3)
prices = st.decimals(min_value=Decimal("100"), max_value=Decimal("100000"), places=2)
leverages = st.integers(min_value=1, max_value=125)


@given(quantity=quantities, entry=prices, leverage=leverages)
def test_liquidation_is_below_entry_for_longs_and_above_for_shorts(quantity, entry, leverage):
    margin = quantity * entry / leverage
    long = liquidation_price(side="long", quantity=quantity, entry_price=entry, wallet_balance=margin, brackets=BTC)
    short = liquidation_price(side="short", quantity=quantity, entry_price=entry, wallet_balance=margin, brackets=BTC)
    assert long.price < entry
    assert short.price > entry
    assert long.price >= 0


@given(
    quantity=quantities,
    entry=prices,
    low=st.integers(min_value=2, max_value=60),
    high=st.integers(min_value=61, max_value=125),
)
def test_more_leverage_never_moves_the_liquidation_price_away_from_entry(quantity, entry, low, high):
    def distance(leverage: int, side: str) -> Decimal:
        margin = quantity * entry / leverage
        return abs(
            entry
            - liquidation_price(
                side=side, quantity=quantity, entry_price=entry, wallet_balance=margin, brackets=BTC
            ).price
        )

    for side in ("long", "short"):
        assert distance(high, side) <= distance(low, side)
