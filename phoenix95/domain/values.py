"""Small value helpers shared by the domain: sides, actions and Decimal rounding."""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Literal

Side = Literal["long", "short"]
Action = Literal["buy", "sell", "long", "short"]
OrderSide = Literal["buy", "sell"]

ACTIONS: tuple[str, ...] = ("buy", "sell", "long", "short")
ZERO = Decimal(0)
ONE = Decimal(1)
HUNDRED = Decimal(100)
#: Storage precision of money columns (NUMERIC(20, 8)).
MONEY_EXPONENT = Decimal("0.00000001")


def side_of(action: str) -> Side:
    """`buy`/`long` open a long position, `sell`/`short` a short one."""
    if action in ("buy", "long"):
        return "long"
    if action in ("sell", "short"):
        return "short"
    raise ValueError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")


def direction(side: Side) -> int:
    """+1 for long, -1 for short (the `s` of Binance's formulas)."""
    return 1 if side == "long" else -1


def opposite(side: Side) -> Side:
    return "short" if side == "long" else "long"


def entry_order_side(side: Side) -> OrderSide:
    return "buy" if side == "long" else "sell"


def exit_order_side(side: Side) -> OrderSide:
    return "sell" if side == "long" else "buy"


def floor_to_step(value: Decimal, step: Decimal) -> Decimal:
    """Round a quantity down to the exchange's step size (never sizes up)."""
    if step <= 0:
        raise ValueError("step must be positive")
    return (value / step).to_integral_value(rounding=ROUND_DOWN) * step


def round_price(value: Decimal, tick: Decimal, *, up: bool | None = None) -> Decimal:
    """Round a price to the tick size: half-even by default, or up/down when asked."""
    if tick <= 0:
        raise ValueError("tick must be positive")
    rounding = ROUND_HALF_EVEN if up is None else (ROUND_CEILING if up else ROUND_FLOOR)
    return ((value / tick).to_integral_value(rounding=rounding) * tick).quantize(tick)


def money(value: Decimal) -> Decimal:
    """Quantize to the storage precision of money columns (8 decimal places)."""
    return value.quantize(MONEY_EXPONENT, rounding=ROUND_HALF_EVEN)


def clamp(value: Decimal, low: Decimal, high: Decimal) -> Decimal:
    return max(low, min(high, value))
