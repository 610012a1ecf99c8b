"""Trading configuration as a frozen value, with per-symbol overrides.

Defaults are the seed's (../shared/seed): ten USDT-M symbols, min confidence 0.25, Phoenix-95
threshold 0.45, max position 15 % of equity, Kelly fraction 0.20, 20x ISOLATED, stop-loss and
take-profit 2 % as a move in price from entry (at 20x that is 40 % of the margin), taker fee 0.04 %,
funding 0.01 % per 8 h, slippage tolerance 0.1 %, liquidation buffer 10 %, monitoring every 5 s,
auto-close after 48 h.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

DEFAULT_SYMBOLS: tuple[str, ...] = (
    "BTCUSDT",
    "ETHUSDT",
    "BNBUSDT",
    "ADAUSDT",
    "DOGEUSDT",
    "XRPUSDT",
    "SOLUSDT",
    "AVAXUSDT",
    "DOTUSDT",
    "LINKUSDT",
)


@dataclass(frozen=True)
class SymbolRules:
    """Exchange filters of a symbol: price tick, quantity step, minimum notional and minimum quantity
    (Binance USDⓈ-M values; with a live exchange, its exchangeInfo's)."""

    tick_size: Decimal = Decimal("0.01")
    step_size: Decimal = Decimal("0.001")
    min_notional: Decimal = Decimal("5")
    min_qty: Decimal = Decimal(0)


#: Binance USDⓈ-M PRICE_FILTER / LOT_SIZE of the default symbols (exchangeInfo, 2024).
DEFAULT_SYMBOL_RULES: Mapping[str, SymbolRules] = {
    "BTCUSDT": SymbolRules(Decimal("0.10"), Decimal("0.001"), Decimal("100")),
    "ETHUSDT": SymbolRules(Decimal("0.01"), Decimal("0.001"), Decimal("20")),
    "BNBUSDT": SymbolRules(Decimal("0.010"), Decimal("0.01"), Decimal("5")),
    "ADAUSDT": SymbolRules(Decimal("0.00010"), Decimal("1"), Decimal("5")),
    "DOGEUSDT": SymbolRules(Decimal("0.000010"), Decimal("1"), Decimal("5")),
    "XRPUSDT": SymbolRules(Decimal("0.0001"), Decimal("0.1"), Decimal("5")),
    "SOLUSDT": SymbolRules(Decimal("0.0100"), Decimal("1"), Decimal("5")),
    "AVAXUSDT": SymbolRules(Decimal("0.0010"), Decimal("1"), Decimal("5")),
    "DOTUSDT": SymbolRules(Decimal("0.001"), Decimal("0.1"), Decimal("5")),
    "LINKUSDT": SymbolRules(Decimal("0.001"), Decimal("0.01"), Decimal("5")),
}


@dataclass(frozen=True)
class TradingConfig:
    """Everything the pure trading logic needs to decide. Build one per symbol with `for_symbol`."""

    allowed_symbols: frozenset[str] = frozenset(DEFAULT_SYMBOLS)
    # analysis
    min_confidence: Decimal = Decimal("0.25")
    phoenix95_threshold: Decimal = Decimal("0.45")
    # sizing
    max_position_fraction: Decimal = Decimal("0.15")
    kelly_fraction: Decimal = Decimal("0.20")
    leverage: int = 20
    margin_mode: str = "ISOLATED"
    stop_loss_pct: Decimal = Decimal("0.02")
    take_profit_pct: Decimal = Decimal("0.02")
    liquidation_buffer: Decimal = Decimal("0.10")
    # costs
    taker_fee_rate: Decimal = Decimal("0.0004")
    default_funding_rate: Decimal = Decimal("0.0001")
    funding_interval: timedelta = timedelta(hours=8)
    slippage_tolerance: Decimal = Decimal("0.001")
    base_slippage_rate: Decimal = Decimal("0.0002")
    # limits
    max_open_positions: int = 10
    max_notional_per_order: Decimal = Decimal("250000")
    max_exposure_per_symbol: Decimal = Decimal("500000")
    max_orders_per_minute: int = 60
    signal_max_age: timedelta = timedelta(minutes=5)
    duplicate_window: timedelta = timedelta(seconds=60)
    #: PRICE_COLLAR: reject a signal whose price is further than this from the last market price
    #: (basis points); None: off.
    price_collar_bps: Decimal | None = None
    # positions
    monitoring_interval: timedelta = timedelta(seconds=5)
    max_hold: timedelta = timedelta(hours=48)
    starting_equity: Decimal = Decimal("10000")
    # exchange filters and per-symbol overrides
    symbol_rules: Mapping[str, SymbolRules] = field(default_factory=lambda: dict(DEFAULT_SYMBOL_RULES))
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def rules(self, symbol: str) -> SymbolRules:
        return self.symbol_rules.get(symbol, SymbolRules())

    def for_symbol(self, symbol: str) -> TradingConfig:
        """This config with the symbol's overrides applied (unknown override keys raise)."""
        override = self.overrides.get(symbol)
        if not override:
            return self
        names = {f.name for f in fields(self)} - {"overrides", "symbol_rules", "allowed_symbols"}
        unknown = set(override) - names
        if unknown:
            raise ValueError(f"unknown override(s) for {symbol}: {', '.join(sorted(unknown))}")
        return replace(self, **{key: _coerce(getattr(self, key), value) for key, value in override.items()})

    def with_symbol_rules(self, rules: Mapping[str, SymbolRules]) -> TradingConfig:
        """This config with some symbols' filters replaced (a live exchange's exchangeInfo)."""
        if not rules:
            return self
        return replace(self, symbol_rules={**self.symbol_rules, **rules})

    def with_changes(self, **changes: Any) -> TradingConfig:
        return replace(self, **{key: _coerce(getattr(self, key), value) for key, value in changes.items()})


def _coerce(current: Any, value: Any) -> Any:
    if isinstance(current, Decimal) and not isinstance(value, Decimal):
        return Decimal(str(value))
    if isinstance(current, bool):
        return bool(value)
    if isinstance(current, int) and not isinstance(value, int):
        return int(value)
    if isinstance(current, timedelta) and not isinstance(value, timedelta):
        return timedelta(seconds=float(value))
    return value
