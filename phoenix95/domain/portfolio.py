"""The paper account: equity follows realized PnL; open exposure feeds the risk checks."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from phoenix95.domain.positions import Position
from phoenix95.domain.risk import Exposure
from phoenix95.domain.values import ZERO


@dataclass(frozen=True)
class Account:
    starting_equity: Decimal
    realized_pnl: Decimal = ZERO

    @property
    def equity(self) -> Decimal:
        return self.starting_equity + self.realized_pnl

    def with_realized(self, amount: Decimal) -> Account:
        return Account(self.starting_equity, self.realized_pnl + amount)


def equity_of(starting_equity: Decimal, closed: Iterable[Position]) -> Decimal:
    return starting_equity + sum((p.realized_pnl for p in closed if not p.is_open), ZERO)


def exposure_of(position: Position) -> Exposure:
    return Exposure(
        reference_id=position.position_id,
        symbol=position.symbol,
        side=position.side,
        quantity=position.quantity,
        notional=position.notional,
        margin=position.margin,
        opened_at=position.opened_at,
    )
