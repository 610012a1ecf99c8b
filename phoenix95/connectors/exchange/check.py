"""`p95 exchange check`: connectivity, the key's permissions, balance, positions and open orders -
the first command to run with new keys. Also run at worker start (a fatal finding stops it with
one clear line)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from phoenix95.connectors.exchange import binance_parse as parse
from phoenix95.connectors.exchange.binance import BinanceExchange
from phoenix95.connectors.exchange.binance_rest import AmbiguousResponse, AuthError, ExchangeError, ExchangeHalted


@dataclass
class CheckResult:
    exchange: str
    connectivity: bool = False
    clock_offset_ms: float | None = None
    can_trade: bool | None = None
    withdrawals: bool | None = None
    ip_restricted: bool | None = None
    balance: dict[str, str] = field(default_factory=dict)
    positions: list[dict[str, str]] = field(default_factory=list)
    open_orders: int | None = None
    open_protection: int | None = None
    #: Symbols whose filters (exchangeInfo) were read and recorded for risk.
    symbol_filters: int | None = None
    fatal: str | None = None
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


async def check_account(exchange: BinanceExchange) -> CheckResult:
    rest = exchange.rest
    result = CheckResult(exchange=exchange.name)
    try:
        result.clock_offset_ms = round(await rest.sync_time(), 1)
        result.connectivity = True
    except (ExchangeError, AmbiguousResponse, ExchangeHalted) as error:
        result.fatal = f"cannot reach {exchange.name}: {_first_line(error)}"
        return result
    try:  # recorded for risk (exchange_symbol_filters), which sizes and rounds with them
        result.symbol_filters = len(await exchange.filters())
    except (ExchangeError, AmbiguousResponse, ExchangeHalted) as error:
        result.warnings.append(f"symbol filters (exchangeInfo) not read: {_first_line(error)}")
    if abs(result.clock_offset_ms) > rest.settings.max_clock_drift_s * 1000:
        result.warnings.append(
            f"the local clock is off by {result.clock_offset_ms / 1000:.2f} s (compensated; fix NTP)"
        )
    try:
        balances = await rest.call("fapiPrivateV2GetBalance", {}, weight=5)
    except AuthError as error:
        environment = "demo" if exchange.name == "binance-demo" else "live"
        result.fatal = (
            f"the API key was refused by Binance ({error.code or error.status}): check P95_EXCHANGE__API_KEY and"
            f" API_SECRET, the key's IP whitelist, and that it is a key of the {environment} environment"
        )
        return result
    except (ExchangeError, AmbiguousResponse, ExchangeHalted) as error:
        result.fatal = f"balance not readable: {_first_line(error)}"
        return result
    for entry in balances if isinstance(balances, list) else []:
        if isinstance(entry, dict) and parse.dec(entry.get("balance", "0")) != 0:
            result.balance[str(entry.get("asset"))] = str(entry.get("balance"))
    try:
        restrictions = await rest.call("sapiGetAccountApiRestrictions", {})
    except (ExchangeError, AmbiguousResponse) as error:
        result.warnings.append(f"the key's permissions are not readable here ({_first_line(error)})")
        restrictions = None
    if isinstance(restrictions, dict):
        result.can_trade = bool(restrictions.get("enableFutures"))
        result.withdrawals = bool(restrictions.get("enableWithdrawals"))
        result.ip_restricted = bool(restrictions.get("ipRestrict"))
        if not result.can_trade:
            result.fatal = "the API key cannot trade futures: enable 'Futures' for it on Binance (API management)"
        if result.withdrawals:
            result.warnings.append("the API key may WITHDRAW funds: a trading bot's key should not (disable it)")
        if not result.ip_restricted:
            result.warnings.append("the API key has no IP whitelist: restrict it to this server's address")
    try:
        result.positions = [
            {
                "symbol": p.symbol,
                "amount": str(p.amount),
                "entry_price": str(p.entry_price),
                "mark_price": str(p.mark_price),
                "unrealized_pnl": str(p.unrealized_pnl),
            }
            for p in await exchange.positions()
        ]
        orders = await rest.call("fapiPrivateGetOpenOrders", {}, weight=40)
        result.open_orders = len(orders) if isinstance(orders, list) else None
        algo = await rest.call("fapiPrivateGetOpenAlgoOrders", {})
        result.open_protection = len(algo) if isinstance(algo, list) else None
    except (ExchangeError, AmbiguousResponse, ExchangeHalted, parse.Malformed) as error:
        result.warnings.append(f"positions/open orders not readable: {_first_line(error)}")
    return result


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0][:200] if str(error) else type(error).__name__
