"""Binance USDⓈ-M answers -> our types. Anything not of the documented shape raises `Malformed`, which
the connector treats as an ambiguous answer (the order goes UNKNOWN and is asked for by id)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any


class Malformed(ValueError):
    """An answer not of the documented shape."""


def ms_time(value: Any) -> datetime:
    try:
        return datetime.fromtimestamp(int(value) / 1000, tz=UTC)
    except (TypeError, ValueError, OverflowError) as error:
        raise Malformed(f"bad time {value!r}") from error


def dec(value: Any, what: str = "number") -> Decimal:
    try:
        result = Decimal(str(value))
    except (InvalidOperation, TypeError, ValueError) as error:
        raise Malformed(f"bad {what} {value!r}") from error
    if not result.is_finite():
        raise Malformed(f"bad {what} {value!r}")
    return result


@dataclass(frozen=True)
class OrderAnswer:
    order_id: str
    client_order_id: str
    symbol: str
    status: str  # NEW | PARTIALLY_FILLED | FILLED | CANCELED | REJECTED | EXPIRED | EXPIRED_IN_MATCH
    side: str
    quantity: Decimal
    executed: Decimal
    avg_price: Decimal
    update_time: datetime


def order_answer(answer: Any) -> OrderAnswer:
    if not isinstance(answer, dict):
        raise Malformed(f"order answer is {type(answer).__name__}, not an object")
    try:
        return OrderAnswer(
            order_id=str(answer["orderId"]),
            client_order_id=str(answer["clientOrderId"]),
            symbol=str(answer["symbol"]),
            status=str(answer["status"]),
            side=str(answer["side"]).lower(),
            quantity=dec(answer["origQty"], "origQty"),
            executed=dec(answer["executedQty"], "executedQty"),
            avg_price=dec(answer.get("avgPrice") or "0", "avgPrice"),
            update_time=ms_time(answer.get("updateTime") or answer.get("time")),
        )
    except KeyError as error:
        raise Malformed(f"order answer without {error}") from error


@dataclass(frozen=True)
class AlgoAnswer:
    algo_id: str
    client_algo_id: str
    symbol: str
    status: str  # NEW | CANCELED | TRIGGERING | TRIGGERED | FINISHED | REJECTED | EXPIRED
    order_type: str
    trigger_price: Decimal
    actual_order_id: str


def algo_answer(answer: Any) -> AlgoAnswer:
    if not isinstance(answer, dict):
        raise Malformed(f"algo order answer is {type(answer).__name__}, not an object")
    try:
        return AlgoAnswer(
            algo_id=str(answer["algoId"]),
            client_algo_id=str(answer["clientAlgoId"]),
            symbol=str(answer["symbol"]),
            status=str(answer["algoStatus"]),
            order_type=str(answer.get("orderType", "")),
            trigger_price=dec(answer.get("triggerPrice") or "0", "triggerPrice"),
            actual_order_id=str(answer.get("actualOrderId") or ""),
        )
    except KeyError as error:
        raise Malformed(f"algo order answer without {error}") from error


def trade_row(exchange: str, trade: dict[str, Any], adopted: bool) -> tuple[Any, ...] | None:
    """A /fapi/v1/userTrades entry as an exchange_fills row (None when not of the documented shape);
    its last column is the commission in USDT (None when paid in another asset not converted)."""
    try:
        return (
            exchange,
            str(trade["symbol"]),
            int(trade["id"]),
            str(trade["orderId"]),
            trade.get("clientOrderId"),
            str(trade["side"]).lower(),
            dec(trade["price"]),
            dec(trade["qty"]),
            dec(trade.get("commission", "0")),
            str(trade.get("commissionAsset", "USDT")),
            dec(trade.get("realizedPnl", "0")),
            ms_time(trade["time"]),
            adopted,
            _commission_usdt(trade),
        )
    except (KeyError, Malformed, TypeError, ValueError):
        return None


def _commission_usdt(trade: dict[str, Any]) -> Decimal | None:
    """The commission in USDT: the commission itself when paid in USDT, else the connector's
    conversion (``commissionUsdt``), None when unknown."""
    if str(trade.get("commissionAsset", "USDT")).upper() == "USDT":
        return dec(trade.get("commission", "0"))
    value = trade.get("commissionUsdt")
    return dec(value) if value is not None else None


def income_rows(answer: list[Any]) -> list[tuple[Any, ...]]:
    """/fapi/v1/income entries as exchange_income rows (tran id, symbol, type, amount, asset, time);
    entries not of the documented shape are skipped."""
    rows = []
    for entry in answer:
        try:
            rows.append(
                (
                    int(entry["tranId"]),
                    entry.get("symbol") or None,
                    str(entry["incomeType"]),
                    dec(entry["income"]),
                    str(entry.get("asset", "USDT")),
                    ms_time(entry["time"]),
                )
            )
        except (KeyError, TypeError, ValueError, AttributeError, Malformed):
            continue
    return rows


@dataclass(frozen=True)
class ExchangePosition:
    symbol: str
    amount: Decimal  # signed: > 0 long, < 0 short
    entry_price: Decimal
    mark_price: Decimal
    unrealized_pnl: Decimal
    leverage: int
    margin_type: str

    @property
    def side(self) -> str:
        return "long" if self.amount > 0 else "short"


def positions(answer: Any) -> list[ExchangePosition]:
    if not isinstance(answer, list):
        raise Malformed("positionRisk answer is not a list")
    out = []
    for entry in answer:
        try:
            amount = dec(entry["positionAmt"])
            if amount == 0:
                continue
            out.append(
                ExchangePosition(
                    symbol=str(entry["symbol"]),
                    amount=amount,
                    entry_price=dec(entry["entryPrice"]),
                    mark_price=dec(entry.get("markPrice") or "0"),
                    unrealized_pnl=dec(entry.get("unRealizedProfit") or "0"),
                    leverage=int(entry.get("leverage") or 0),
                    margin_type=str(entry.get("marginType", "")),
                )
            )
        except (KeyError, TypeError, ValueError) as error:
            raise Malformed(f"positionRisk entry without {error}") from error
    return out
