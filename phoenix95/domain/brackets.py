"""Binance USDⓈ-M notional and leverage brackets (`GET /fapi/v1/leverageBracket`), as data: reading
them from files is `connectors/exchange/brackets.py`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class Bracket:
    bracket: int
    initial_leverage: int
    notional_floor: Decimal
    notional_cap: Decimal
    maint_margin_ratio: Decimal
    cum: Decimal

    def contains(self, notional: Decimal) -> bool:
        return self.notional_floor <= notional < self.notional_cap


class UnknownSymbolError(KeyError):
    """No bracket table is known for the symbol."""


class BracketTable:
    """Brackets per symbol, ordered by notional."""

    def __init__(self, brackets: Mapping[str, Sequence[Bracket]]):
        self._brackets = {
            symbol: tuple(sorted(rows, key=lambda b: b.notional_floor)) for symbol, rows in brackets.items()
        }
        for symbol, rows in self._brackets.items():
            if not rows:
                raise ValueError(f"empty bracket list for {symbol}")

    @classmethod
    def from_binance(cls, payload: Iterable[Mapping[str, Any]]) -> BracketTable:
        """Build from Binance's leverageBracket response (numbers may be JSON floats)."""
        table: dict[str, list[Bracket]] = {}
        for entry in payload:
            rows = [
                Bracket(
                    bracket=int(row["bracket"]),
                    initial_leverage=int(row["initialLeverage"]),
                    notional_floor=_dec(row["notionalFloor"]),
                    notional_cap=_dec(row["notionalCap"]),
                    maint_margin_ratio=_dec(row["maintMarginRatio"]),
                    cum=_dec(row["cum"]),
                )
                for row in entry["brackets"]
            ]
            table[str(entry["symbol"]).upper()] = rows
        return cls(table)

    def symbols(self) -> frozenset[str]:
        return frozenset(self._brackets)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._brackets

    def for_symbol(self, symbol: str) -> tuple[Bracket, ...]:
        try:
            return self._brackets[symbol]
        except KeyError:
            raise UnknownSymbolError(symbol) from None

    def bracket_for(self, symbol: str, notional: Decimal) -> Bracket:
        return bracket_for(self.for_symbol(symbol), notional)


def bracket_for(brackets: Sequence[Bracket], notional: Decimal) -> Bracket:
    """The bracket whose [floor, cap) holds the notional; the last one beyond the top cap."""
    notional = abs(notional)
    for row in brackets:
        if row.contains(notional):
            return row
    return brackets[-1]


def _dec(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))
