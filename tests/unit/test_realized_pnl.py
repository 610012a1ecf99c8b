"""One realized-PnL rule for every close: the domain's settlement, and reconciliation's EXCHANGE_CLOSED
close, which computes it from the position row with the same function (not in SQL)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from phoenix95.domain.config import TradingConfig
from phoenix95.domain.execution import Fill
from phoenix95.domain.positions import close_by_order, default_funding, realized_pnl
from phoenix95.domain.values import money
from tests import factories

CONFIG = TradingConfig()

prices = st.decimals(min_value=Decimal("1000"), max_value=Decimal("120000"), places=1)
fees = st.decimals(min_value=Decimal(0), max_value=Decimal("50"), places=8)


@given(side=st.sampled_from(["long", "short"]), exit_price=prices, exit_fee=fees)
def test_a_close_by_the_domain_realizes_what_the_shared_rule_computes_from_the_position_row(side, exit_price, exit_fee):
    position = factories.position(side=side)
    fill = Fill(
        side="sell" if side == "long" else "buy",
        price=exit_price,
        quantity=position.quantity,
        notional=exit_price * position.quantity,
        fee=exit_fee,
        slippage_rate=Decimal(0),
        reference_price=exit_price,
        time=position.opened_at + timedelta(minutes=5),
    )
    closed = close_by_order(
        position,
        fill=fill,
        config=CONFIG,
        funding_rate=default_funding(CONFIG),
        cause_id="test",
        reason="manual",
    ).position
    assert closed.realized_pnl == realized_pnl(
        side, position.quantity, position.entry_price, exit_price, position.entry_fee + exit_fee, position.funding_paid
    )


def test_a_half_at_the_ninth_decimal_rounds_to_even_as_every_money_column_does():
    # 1 x (0.000000005 - 0) = 0.000000005: half-even gives 0.00000000 (SQL ROUND would give 0.00000001)
    assert realized_pnl("long", Decimal(1), Decimal(0), Decimal("0.000000005"), Decimal(0), Decimal(0)) == Decimal(
        "0E-8"
    )
    assert realized_pnl("long", Decimal(1), Decimal(0), Decimal("0.000000015"), Decimal(0), Decimal(0)) == money(
        Decimal("0.00000002")
    )
