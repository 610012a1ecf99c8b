"""Trading state of the account (NautilusTrader's model): ACTIVE, REDUCING, HALTED."""

from __future__ import annotations

from enum import StrEnum


class TradingState(StrEnum):
    ACTIVE = "ACTIVE"  # everything passes the state check
    REDUCING = "REDUCING"  # only orders that shrink a position pass
    HALTED = "HALTED"  # no new orders at all

    @classmethod
    def parse(cls, value: str) -> TradingState:
        try:
            return cls(value.upper())
        except ValueError:
            raise ValueError(f"unknown trading state {value!r}; expected ACTIVE, REDUCING or HALTED") from None

    def allows(self, *, reduces_position: bool) -> bool:
        if self is TradingState.ACTIVE:
            return True
        if self is TradingState.REDUCING:
            return reduces_position
        return False
