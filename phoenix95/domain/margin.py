"""Margin and liquidation price, as Binance USDⓈ-M computes them (isolated margin, one-way mode).

    LP = (WB + cum - s*Q*EP) / (Q*MMR - s*Q)

s = +1 long / -1 short, Q the quantity, EP the entry price, WB the isolated wallet balance (the
position's margin), MMR and cum from the leverage bracket of the notional. If the notional at LP falls
into another bracket, the price is recomputed with that one.
Worked example: BTCUSDT long 0.1 at 60,000 with WB 300, bracket 1 (MMR 0.4 %, cum 0) -> 57,228.92;
short -> 62,749.00.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from phoenix95.domain.brackets import Bracket, bracket_for
from phoenix95.domain.values import ZERO, Side, direction

_MAX_BRACKET_HOPS = 8


@dataclass(frozen=True)
class LiquidationQuote:
    price: Decimal
    bracket: Bracket


def initial_margin(notional: Decimal, leverage: int) -> Decimal:
    if leverage < 1:
        raise ValueError("leverage must be >= 1")
    return abs(notional) / leverage


def maintenance_margin(notional: Decimal, bracket: Bracket) -> Decimal:
    """Binance: notional x MMR - cum (the cum amount makes the tiers continuous)."""
    return abs(notional) * bracket.maint_margin_ratio - bracket.cum


def liquidation_price(
    *,
    side: Side,
    quantity: Decimal,
    entry_price: Decimal,
    wallet_balance: Decimal,
    brackets: Sequence[Bracket],
) -> LiquidationQuote:
    """Liquidation price of an isolated position. Never negative (0 means it cannot be liquidated)."""
    if quantity <= 0:
        raise ValueError("quantity must be positive")
    if entry_price <= 0:
        raise ValueError("entry price must be positive")
    s = direction(side)
    bracket = bracket_for(brackets, quantity * entry_price)
    price = ZERO
    for _ in range(_MAX_BRACKET_HOPS):
        price = _formula(s, quantity, entry_price, wallet_balance, bracket)
        at_liquidation = bracket_for(brackets, quantity * price)
        if at_liquidation == bracket:
            break
        bracket = at_liquidation
    return LiquidationQuote(price=max(price, ZERO), bracket=bracket)


def _formula(s: int, quantity: Decimal, entry: Decimal, wallet: Decimal, bracket: Bracket) -> Decimal:
    numerator = wallet + bracket.cum - s * quantity * entry
    denominator = quantity * bracket.maint_margin_ratio - s * quantity
    return numerator / denominator


def distance_to_liquidation_pct(side: Side, mark_price: Decimal, liquidation: Decimal) -> Decimal:
    """How far the mark price is from liquidation, in % of the mark price (seed definition)."""
    if mark_price <= 0:
        return ZERO
    return direction(side) * (mark_price - liquidation) / mark_price * 100


def margin_ratio(maintenance: Decimal, margin_balance: Decimal) -> Decimal:
    """Binance's margin ratio: maintenance margin / margin balance; liquidation at 100 %."""
    if margin_balance <= 0:
        return Decimal(100)
    return maintenance / margin_balance * 100
