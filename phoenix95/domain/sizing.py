"""Position sizing: fractional Kelly, capped, rounded to the symbol's step.

    kelly    = p - (1 - p) / b          p = win probability (final confidence)
                                         b = payoff ratio = take-profit distance / stop-loss distance
    fraction = min(kelly x kelly_fraction, max_position_fraction)     (0 when kelly <= 0)
    margin   = fraction x equity         (the isolated margin committed to the position)
    notional = margin x leverage
    quantity = notional / entry, rounded down to the step size

With the seed's symmetric 2 %/2 % stop and target b = 1, so Kelly is positive only when p > 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from phoenix95.domain.values import ONE, ZERO, floor_to_step


@dataclass(frozen=True)
class Sizing:
    win_probability: Decimal
    payoff_ratio: Decimal
    kelly: Decimal
    position_fraction: Decimal
    margin: Decimal
    notional: Decimal
    quantity: Decimal


def kelly(win_probability: Decimal, payoff_ratio: Decimal) -> Decimal:
    if payoff_ratio <= 0:
        raise ValueError("payoff ratio must be positive")
    return win_probability - (ONE - win_probability) / payoff_ratio


def size_position(
    *,
    win_probability: Decimal,
    stop_distance: Decimal,
    target_distance: Decimal,
    equity: Decimal,
    entry_price: Decimal,
    leverage: int,
    kelly_fraction: Decimal,
    max_position_fraction: Decimal,
    step_size: Decimal,
) -> Sizing:
    """Size a new position. Distances are fractions of the entry price (0.02 = 2 %)."""
    if stop_distance <= 0 or target_distance <= 0:
        raise ValueError("stop and target distances must be positive")
    if entry_price <= 0:
        raise ValueError("entry price must be positive")
    payoff = target_distance / stop_distance
    edge = kelly(win_probability, payoff)
    fraction = min(max(edge, ZERO) * kelly_fraction, max_position_fraction) if equity > 0 else ZERO
    margin_budget = fraction * equity
    quantity = floor_to_step(margin_budget * leverage / entry_price, step_size) if fraction > 0 else ZERO
    notional = quantity * entry_price
    return Sizing(
        win_probability=win_probability,
        payoff_ratio=payoff,
        kelly=edge,
        position_fraction=fraction,
        margin=notional / leverage,
        notional=notional,
        quantity=quantity,
    )
