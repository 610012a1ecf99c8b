"""The Binance USDⓈ-M connector (``P95_EXCHANGE__KIND=binance-demo|binance``) behind `ExchangeConnector`.

Idempotency: the deterministic client order id (``p95-<order uuid>``) is the order's identity.
1. The intent is written to PostgreSQL (status SENT) before the order is sent; a client order id
   already there is never sent again, only asked for (``origClientOrderId``).
2. A timeout, a lost connection, a 5xx, ``-1006``/``-1007`` or a malformed answer makes the order
   UNKNOWN: it is asked for by its client order id a few times; still unknown, it is left UNKNOWN for
   reconciliation (the verdict's order is reported rejected with EXCHANGE_STATUS_UNKNOWN, and the
   position, should the exchange have filled it after all, is flagged by reconciliation: trading halts).
3. A definite refusal (``-1021`` after re-sync, 429) is asked for first and sent again once, with the
   same client order id; any other refusal rejects the order.

Protection: after an entry fills, a reduce-only STOP_MARKET and TAKE_PROFIT_MARKET go to the Algo
Order API (``/fapi/v1/algoOrder``; the old endpoint answers -4120 since December 2025), with client
algo ids derived from the entry's, written as intents first like any order. When one fires the other
is cancelled (`check_protection`, driven by the user-data stream and by reconciliation); when
Phoenix95 closes the position itself both are cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from prometheus_client import Counter, Gauge

from phoenix95.connectors.exchange import binance_parse as parse
from phoenix95.connectors.exchange.base import ExchangeOrder, OrderRequest
from phoenix95.connectors.exchange.binance_rest import (
    AmbiguousResponse,
    BinanceRest,
    ExchangeError,
    ExchangeHalted,
    SymbolFilters,
    parse_filters,
    plain,
)
from phoenix95.connectors.exchange.intents import UNSETTLED, Intent, IntentStore
from phoenix95.domain import ids
from phoenix95.domain.values import money
from phoenix95.settings import ExchangeSettings

logger = logging.getLogger(__name__)

ORDERS = Counter("p95_exchange_orders_total", "Exchange order outcomes", ["kind", "outcome"])

UNCONVERTED = Gauge(
    "p95_exchange_fees_unconverted",
    "Recorded exchange fills whose commission (paid in BNB) is not known in USDT yet (retried by reconciliation)",
)

EventSink = Callable[[str, str, str, str, dict[str, Any]], Awaitable[None]]
"""(kind, severity, subject, message, details) -> publish a ControlEvent."""


#: Assets a commission is already counted in (USDⓈ-M settles in USDT).
QUOTE_ASSETS = frozenset({"USDT"})
#: How long a commission asset's price read from the exchange is used.
PRICE_TTL_S = 10.0
#: A trade older than this is converted at its asset's price at the trade's time (its 1-minute kline).
RECENT_TRADE_S = 60.0
#: How long the fills of a protection order that fired are asked for, when the exchange has none yet.
FILLS_WANTED_FOR = timedelta(days=2)


def fills_missing(intent: Intent) -> bool:
    """A protection order that fired whose fills are not recorded yet (settled: `executed_qty` set)."""
    return intent.kind in ("stop_loss", "take_profit") and intent.status == "TRIGGERED" and intent.executed_qty is None


def commission_total(trades: Sequence[dict[str, Any]]) -> Decimal | None:
    """The fills' commission in USDT (`commissionUsdt`, see `BinanceExchange.record_fills`); None when
    one of them is not known."""
    total = Decimal(0)
    for trade in trades:
        value = trade.get("commissionUsdt")
        if value is None:
            return None
        total += value
    return total


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def protection_id(kind: str, entry_client_order_id: str) -> str:
    """``p95-sl-`` / ``p95-tp-`` + 29 hex digits derived from the entry's id (36 characters)."""
    prefix = "p95-sl-" if kind == "stop_loss" else "p95-tp-"
    return prefix + uuid.UUID(ids.derive(kind, entry_client_order_id)).hex[:29]


class BinanceExchange:
    def __init__(
        self,
        rest: BinanceRest,
        store: IntentStore,
        settings: ExchangeSettings,
        *,
        events: EventSink | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self.rest = rest
        self.store = store
        self.settings = settings
        self.name: str = settings.kind
        self.events = events
        self._sleep = sleep
        self._filters: dict[str, SymbolFilters] = {}
        self._setup: dict[str, tuple[int, str]] = {}
        self._setup_lock = asyncio.Lock()
        self._asset_prices: dict[str, tuple[Decimal, float]] = {}
        self._kline_prices: dict[tuple[str, int], Decimal] = {}

    async def close(self) -> None:
        await self.rest.close()

    async def _event(self, kind: str, severity: str, subject: str, message: str, **details: Any) -> None:
        if self.events is not None:
            try:
                await self.events(kind, severity, subject, message, details)
            except Exception:  # an event that cannot be published must not fail an order
                logger.exception("exchange: could not publish a %s event", kind)

    # -- symbols ---------------------------------------------------------------------------------

    async def filters(self, symbol: str | None = None) -> dict[str, SymbolFilters]:
        if not self._filters or (symbol is not None and symbol not in self._filters):
            info = await self.rest.call("fapiPublicGetExchangeInfo", weight=1)
            if not isinstance(info, dict):
                raise AmbiguousResponse("exchangeInfo: malformed answer")
            self._filters = parse_filters(info)
            try:  # risk sizes and rounds with them (PgExchangeLedger.symbol_rules)
                await self.store.record_filters(self.name, list(self._filters.values()))
            except Exception as error:
                logger.warning("exchange: symbol filters not recorded: %s", error)
            for limit in info.get("rateLimits", []):
                if (
                    isinstance(limit, dict)
                    and limit.get("rateLimitType") == "REQUEST_WEIGHT"
                    and limit.get("interval") == "MINUTE"
                    and int(limit.get("intervalNum", 1)) == 1
                ):
                    self.rest.weight_limit = int(limit.get("limit", self.rest.weight_limit))
        return self._filters

    async def symbol_filters(self, symbol: str) -> SymbolFilters:
        filters = (await self.filters(symbol)).get(symbol)
        if filters is None:
            raise ExchangeError(f"{symbol} is not traded on Binance USDⓈ-M", code=-1121)
        return filters

    async def ensure_symbol(self, symbol: str, leverage: int | None, margin_mode: str | None) -> SymbolFilters:
        """On first use of a symbol (or a new leverage): ISOLATED margin, the verdict's leverage. Not
        for a reduce-only close (see `_submit`): its position was set up when it opened."""
        filters = await self.symbol_filters(symbol)
        wanted = (leverage or 0, (margin_mode or "ISOLATED").upper())
        async with self._setup_lock:
            if self._setup.get(symbol) == wanted:
                return filters
            margin = "CROSSED" if wanted[1] in ("CROSS", "CROSSED") else "ISOLATED"
            try:
                await self.rest.call("fapiPrivatePostMarginType", {"symbol": symbol, "marginType": margin})
            except ExchangeError as error:
                if error.code != -4046:  # "No need to change margin type."
                    raise
            if wanted[0]:
                await self.rest.call("fapiPrivatePostLeverage", {"symbol": symbol, "leverage": wanted[0]})
            self._setup[symbol] = wanted
        return filters

    # -- the port --------------------------------------------------------------------------------

    async def query(self, client_order_ids: Sequence[str]) -> dict[str, ExchangeOrder]:
        """Orders the exchange has, by client order id. An id without an intent was never sent (the
        intent is written first), so only unsettled intents cost a request."""
        intents = await self.store.get(client_order_ids)
        out: dict[str, ExchangeOrder] = {}
        for client_id, intent in intents.items():
            if intent.status in UNSETTLED:
                intent = await self._resolve(intent, attempts=1)  # found FILLED: protected on the way
            order = self._order(intent)
            if order is not None and intent.status != "NOT_PLACED":
                out[client_id] = order
        return out

    async def submit(self, requests: Sequence[OrderRequest]) -> dict[str, ExchangeOrder]:
        results = await asyncio.gather(*(self._submit(request) for request in requests))
        return {order.client_order_id: order for order in results if order is not None}

    async def cancel(self, client_order_id: str) -> ExchangeOrder | None:
        intents = await self.store.get([client_order_id])
        intent = intents.get(client_order_id)
        if intent is None:
            return None
        if intent.kind in ("stop_loss", "take_profit") and intent.status == "NEW":
            intent = await self._cancel_algo(intent)
        return self._order(intent)

    async def cancel_all(self, symbol: str) -> int:
        """Cancel Phoenix95's resting orders of a symbol (its protection)."""
        cancelled = 0
        for intent in await self.store.protection_for(symbol):
            if (await self._cancel_algo(intent)).status == "CANCELED":
                cancelled += 1
        return cancelled

    # -- orders ----------------------------------------------------------------------------------

    async def _submit(self, request: OrderRequest) -> ExchangeOrder | None:
        kind = "exit" if request.reduce_only else "entry"
        try:
            if request.reduce_only:
                # A close: the position exists, with its margin type and leverage; only the filters.
                filters = await self.symbol_filters(request.symbol)
            else:
                filters = await self.ensure_symbol(request.symbol, request.leverage, request.margin_mode)
        except ExchangeHalted as error:
            return self._refused(request, "EXCHANGE_HALTED", str(error))
        except (ExchangeError, AmbiguousResponse) as error:
            # Nothing was sent for this order: the symbol could not be set up.
            return self._refused(request, "EXCHANGE_SETUP_FAILED", str(error))
        quantity = filters.quantity(request.quantity)
        intent = Intent(
            client_order_id=request.client_order_id,
            kind=kind,
            exchange=self.name,
            symbol=request.symbol,
            side=request.side,
            quantity=quantity,
            reduce_only=request.reduce_only,
            reference_price=request.reference_price,
            stop_loss=request.stop_loss,
            take_profit=request.take_profit,
            planned_entry=request.planned_entry,
        )
        if quantity < filters.min_qty or (
            not request.reduce_only and quantity * request.reference_price < filters.min_notional
        ):
            return self._refused(request, "BELOW_EXCHANGE_MINIMUM", f"{quantity} {request.symbol}")
        existing = await self.store.claim(intent)
        if existing is not None:  # sent before (a crash, a re-delivery): ask, never send again
            resolved = await self._resolve(existing) if existing.status in UNSETTLED else existing
            return self._order(resolved)
        params = {
            "symbol": request.symbol,
            "side": request.side.upper(),
            "type": "MARKET",
            "quantity": plain(quantity),
            "newClientOrderId": request.client_order_id,
            "newOrderRespType": "RESULT",
        }
        if request.reduce_only:
            params["reduceOnly"] = "true"
        resent = False
        while True:
            try:
                answer = await self.rest.create("fapiPrivatePostOrder", params)
                settled = await self._apply(intent, parse.order_answer(answer))
            except (AmbiguousResponse, parse.Malformed) as error:
                logger.warning(
                    "exchange: order %s: %s; asking for it by client order id", intent.client_order_id, error
                )
                ORDERS.labels(kind, "ambiguous").inc()
                intent = await self.store.save(intent.with_(status="UNKNOWN", reject_reason=str(error)[:200]))
                settled = await self._resolve(intent)
            except ExchangeHalted as error:
                ORDERS.labels(kind, "halted").inc()
                settled = await self.store.save(
                    intent.with_(status="REJECTED", reject_reason="EXCHANGE_HALTED: " + str(error)[:150])
                )
            except ExchangeError as error:
                if not resent and (error.code == -1021 or error.status == 429):
                    # A definite refusal (nothing executed): ask first, then send the same id once more.
                    found = await self._ask(intent)
                    if found is None:
                        resent = True
                        continue
                    settled = await self._apply(intent, found)
                else:
                    ORDERS.labels(kind, "rejected").inc()
                    settled = await self.store.save(
                        intent.with_(status="REJECTED", reject_code=error.code, reject_reason=str(error)[:200])
                    )
            break
        if settled.status == "FILLED" and kind == "exit":
            await self._after_exit(settled, request.closes_entry)
        return self._order(settled)

    def _refused(self, request: OrderRequest, reason: str, detail: str) -> ExchangeOrder:
        logger.warning("exchange: order %s not sent: %s (%s)", request.client_order_id, reason, detail)
        ORDERS.labels("entry" if not request.reduce_only else "exit", "not_sent").inc()
        return ExchangeOrder(
            client_order_id=request.client_order_id,
            exchange_order_id="",
            symbol=request.symbol,
            side=request.side,
            quantity=request.quantity,
            status="REJECTED",
            reason=reason,
        )

    async def _ask(self, intent: Intent) -> parse.OrderAnswer | None:
        """The exchange's order of this client order id, or None when it does not have one (-2013)."""
        try:
            answer = await self.rest.call(
                "fapiPrivateGetOrder", {"symbol": intent.symbol, "origClientOrderId": intent.client_order_id}
            )
        except ExchangeError as error:
            if error.code == -2013:
                return None
            raise
        return parse.order_answer(answer)

    async def _resolve(self, intent: Intent, attempts: int | None = None) -> Intent:
        """Settle an order whose answer was lost or ambiguous by asking for it (never by re-sending)."""
        tries = attempts if attempts is not None else self.settings.resolve_attempts
        not_found = 0
        for attempt in range(tries):
            try:
                found = await self._ask(intent)
            except (AmbiguousResponse, parse.Malformed, ExchangeError, ExchangeHalted) as error:
                logger.warning("exchange: asking for %s: %s", intent.client_order_id, error)
                found = None
            else:
                if found is not None:
                    ORDERS.labels(intent.kind, "resolved").inc()
                    return await self._apply(intent, found)
                not_found += 1
            if attempt + 1 < tries:
                await self._sleep(self.settings.resolve_interval_s)
        if not_found == tries and intent.created_at is not None and self._expired(intent.created_at):
            # Binance rejects a request older than its recvWindow, so an order it still does not know
            # once that window (and a margin) has passed was never placed: settled, never re-sent.
            ORDERS.labels(intent.kind, "not_placed").inc()
            return await self.store.save(intent.with_(status="NOT_PLACED"))
        if intent.status != "UNKNOWN":
            intent = await self.store.save(intent.with_(status="UNKNOWN"))
        return intent

    def _expired(self, created_at: datetime) -> bool:
        return self.unknown_until(created_at) <= 0

    def unknown_until(self, created_at: datetime) -> float:
        """Seconds until an order sent at `created_at` that the exchange does not know counts as NOT_PLACED."""
        margin = timedelta(milliseconds=self.settings.recv_window_ms, seconds=self.settings.not_placed_after_s)
        return (created_at + margin - datetime.now(UTC)).total_seconds() + 0.05

    async def _apply(self, intent: Intent, answer: parse.OrderAnswer) -> Intent:
        if answer.status == "FILLED" or (answer.status in ("EXPIRED", "CANCELED") and answer.executed > 0):
            filled = intent.with_(
                status="FILLED",
                exchange_order_id=answer.order_id,
                fill_price=answer.avg_price,
                executed_qty=answer.executed,
                filled_at=answer.update_time,
            )
            # The fee (from the exchange's fills) and an entry's protection, concurrently. The entry is
            # saved FILLED only after its protection was placed, so a FILLED entry was always protected
            # (a worker that dies in between finds it SENT and comes back here).
            (fee, trade_ids), (_, unsaved) = await asyncio.gather(
                self._fee(intent.symbol, answer.order_id), self._protect(filled)
            )
            ORDERS.labels(intent.kind, "filled").inc()
            # One statement: the protection placed (NEW) and the entry FILLED with its fee, together.
            filled = filled.with_(fee=fee, trade_ids=trade_ids)
            await self.store.save_many([*unsaved, filled])
            return filled
        if answer.status in ("NEW", "PARTIALLY_FILLED"):
            # A market order still working: ask again shortly; left UNKNOWN if it does not settle.
            await self._sleep(self.settings.resolve_interval_s)
            again = await self._ask(intent)
            if again is not None and again.status != answer.status:
                return await self._apply(intent, again)
            return await self.store.save(intent.with_(status="UNKNOWN", exchange_order_id=answer.order_id))
        ORDERS.labels(intent.kind, "rejected").inc()
        return await self.store.save(
            intent.with_(status="REJECTED", exchange_order_id=answer.order_id, reject_reason=answer.status)
        )

    async def _fee(self, symbol: str, order_id: str) -> tuple[Decimal | None, tuple[str, ...]]:
        """The commission (in USDT: one paid in BNB is converted, see `record_fills`) and trade ids of
        the order's fills, from the exchange (recorded in exchange_fills). None when not known."""
        try:
            trades = await self.rest.call("fapiPrivateGetUserTrades", {"symbol": symbol, "orderId": order_id}, weight=5)
        except (ExchangeError, AmbiguousResponse, ExchangeHalted) as error:
            logger.warning("exchange: fills of order %s not read: %s", order_id, error)
            return None, ()
        if not isinstance(trades, list):
            return None, ()
        trades, _ = await self.record_fills(trades, adopted=False)
        trade_ids: list[str] = []
        for trade in trades:
            try:
                trade_ids.append(str(trade["id"]))
            except (KeyError, TypeError):
                return None, tuple(trade_ids)
        return commission_total(trades), tuple(trade_ids)

    async def record_fills(self, trades: Sequence[Any], *, adopted: bool) -> tuple[list[dict[str, Any]], int]:
        """Record the exchange's fills (`exchange_fills`, a trade id once), each with its commission in
        USDT: a commission paid in another asset (BNB, with the fee discount) is converted at that
        asset's USDT price at the trade's time (`commission_usdt`), as Decimal. A price that cannot be
        read leaves the USDT figure unknown (NULL): reconciliation retries it (`convert_pending`) and
        lists it until it is known. A fill already recorded with its USDT figure is not converted again.
        Returns the trades with ``commissionUsdt`` set where it is known, and how many were new."""
        priced = [dict(t) for t in trades if isinstance(t, dict)]
        keys = []
        for trade in priced:
            try:
                keys.append((str(trade["symbol"]), int(trade["id"])))
            except (KeyError, TypeError, ValueError):
                continue
        known = await self.store.converted_fees(self.name, keys) if keys else {}
        for trade in priced:
            trade_id = _int_or_none(trade.get("id"))
            stored = known.get((str(trade.get("symbol")), trade_id)) if trade_id is not None else None
            if stored is not None:  # recorded already with its USDT figure: kept
                trade["commissionUsdt"] = stored
                continue
            trade["commissionUsdt"] = await self.commission_usdt(trade, historical=adopted)
        new = await self.store.record_fills(self.name, priced, adopted=adopted)
        return priced, new

    async def commission_usdt(self, trade: dict[str, Any], *, historical: bool = False) -> Decimal | None:
        """A trade's commission in USDT. One paid in another asset is converted at that asset's price at
        the trade's time when the trade is not recent (`historical`: adopted after downtime, or older
        than `RECENT_TRADE_S`): the close of the asset's 1-minute kline containing the trade; else, or
        when that kline cannot be read (logged), at its current price."""
        try:
            commission = parse.dec(trade.get("commission", "0"), "commission")
            asset = str(trade.get("commissionAsset") or "USDT").upper()
        except parse.Malformed:
            return None
        if asset in QUOTE_ASSETS or commission == 0:
            return commission
        try:
            traded_ms: int | None = int(trade["time"])
        except (KeyError, TypeError, ValueError):
            traded_ms = None
        return await self.convert(commission, asset, traded_ms, historical=historical)

    async def convert(self, amount: Decimal, asset: str, traded_ms: int | None, *, historical: bool) -> Decimal | None:
        price: Decimal | None = None
        recent = traded_ms is None or time.time() * 1000 - traded_ms <= RECENT_TRADE_S * 1000
        if traded_ms is not None and (historical or not recent):
            price = await self.asset_price_at(asset, traded_ms)
            if price is None:
                logger.warning(
                    "exchange: %s's price at %s (a commission asset) not read: converted at its current price",
                    asset,
                    datetime.fromtimestamp(traded_ms / 1000, UTC).isoformat(),
                )
        if price is None:
            price = await self.asset_price(asset)
        if price is None:
            logger.warning("exchange: a commission of %s %s is not known in USDT yet: retried", amount, asset)
            return None
        return money(amount * price)

    async def asset_price_at(self, asset: str, at_ms: int) -> Decimal | None:
        """The USDT price of `asset` at `at_ms`: the close of its 1-minute kline (``/fapi/v1/klines``)
        that contains that time (cached); None when the exchange has none or cannot be asked."""
        minute = at_ms - at_ms % 60_000
        cached = self._kline_prices.get((asset, minute))
        if cached is not None:
            return cached
        try:
            answer = await self.rest.call(
                "fapiPublicGetKlines",
                {"symbol": f"{asset}USDT", "interval": "1m", "startTime": minute, "limit": 1},
                weight=1,
            )
            row = answer[0] if isinstance(answer, list) and answer else None
            if not isinstance(row, list) or int(row[0]) != minute:
                return None
            price = parse.dec(row[4], "close")
        except (AmbiguousResponse, ExchangeError, ExchangeHalted, parse.Malformed, IndexError, TypeError, ValueError):
            return None
        if price <= 0:
            return None
        if int(row[6]) < time.time() * 1000:  # a closed minute: its close does not change any more
            self._kline_prices[(asset, minute)] = price
        return price

    async def convert_pending(self) -> list[tuple[str, int, str]]:
        """Retry the USDT figure of every recorded fill whose commission is not known in USDT (its asset's
        price could not be read when it was recorded). Returns those still unknown:
        (symbol, trade id, "<commission> <asset>")."""
        left: list[tuple[str, int, str]] = []
        for symbol, trade_id, commission, asset, traded_at in await self.store.unconverted_fills(self.name):
            value = await self.convert(commission, asset.upper(), int(traded_at.timestamp() * 1000), historical=True)
            if value is None:
                left.append((symbol, trade_id, f"{commission} {asset}"))
            else:
                await self.store.set_commission_usdt(self.name, symbol, trade_id, value)
        UNCONVERTED.set(len(left))
        return left

    async def asset_price(self, asset: str) -> Decimal | None:
        """The current USDT price of `asset` (its ``<asset>USDT`` ticker), cached for `PRICE_TTL_S`."""
        cached = self._asset_prices.get(asset)
        now = time.monotonic()
        if cached is not None and now - cached[1] < PRICE_TTL_S:
            return cached[0]
        for attempt in range(self.settings.resolve_attempts):
            try:
                answer = await self.rest.call("fapiPublicGetTickerPrice", {"symbol": f"{asset}USDT"}, weight=1)
                price = parse.dec(answer["price"], "price") if isinstance(answer, dict) else None
            except (AmbiguousResponse, parse.Malformed, KeyError, TypeError) as error:
                logger.warning("exchange: the price of %s (a commission asset) not read: %s", asset, error)
                price = None
            except (ExchangeError, ExchangeHalted) as error:
                logger.warning("exchange: the price of %s (a commission asset) not read: %s", asset, error)
                return None
            if price is not None and price > 0:
                self._asset_prices[asset] = (price, now)
                return price
            if attempt + 1 < self.settings.resolve_attempts:
                await self._sleep(self.settings.resolve_interval_s)
        return None

    def _order(self, intent: Intent) -> ExchangeOrder | None:
        if intent.status == "FILLED":
            slippage = None
            if intent.reference_price and intent.fill_price:
                slippage = abs(intent.fill_price - intent.reference_price) / intent.reference_price
            return ExchangeOrder(
                client_order_id=intent.client_order_id,
                exchange_order_id=intent.exchange_order_id or "",
                symbol=intent.symbol,
                side=intent.side,  # type: ignore[arg-type]
                quantity=intent.executed_qty if intent.executed_qty is not None else intent.quantity,
                status="FILLED",
                fill_price=intent.fill_price,
                fee=intent.fee,
                filled_at=intent.filled_at,
                slippage_rate=slippage,
                reference_price=intent.reference_price,
                trade_ids=intent.trade_ids,
            )
        status = {"SENT": "UNKNOWN", "UNKNOWN": "UNKNOWN", "NEW": "NEW", "CANCELED": "CANCELED"}.get(
            intent.status, "REJECTED"
        )
        reason = {
            "UNKNOWN": "EXCHANGE_STATUS_UNKNOWN",
            "SENT": "EXCHANGE_STATUS_UNKNOWN",
            "NOT_PLACED": "EXCHANGE_NOT_PLACED",
        }.get(intent.status, "EXCHANGE_REJECTED")
        if intent.reject_reason and intent.reject_reason.startswith("EXCHANGE_HALTED"):
            reason = "EXCHANGE_HALTED"
        return ExchangeOrder(
            client_order_id=intent.client_order_id,
            exchange_order_id=intent.exchange_order_id or "",
            symbol=intent.symbol,
            side=intent.side,  # type: ignore[arg-type]
            quantity=intent.quantity,
            status=status,  # type: ignore[arg-type]
            reason=reason,
        )

    # -- protection ------------------------------------------------------------------------------

    async def ensure_protection(self, entry: Intent, filters: SymbolFilters | None = None) -> list[Intent]:
        """Place a FILLED entry's stop-loss and take-profit unless they exist (idempotent: their ids are
        derived from the entry's, claimed as intents first). Both are placed concurrently."""
        placed, unsaved = await self._protect(entry, filters)
        if unsaved:
            await self.store.save_many(unsaved)
        return placed

    async def _protect(self, entry: Intent, filters: SymbolFilters | None = None) -> tuple[list[Intent], list[Intent]]:
        """`ensure_protection` without the last write: returns the protection intents and those of them
        placed but not saved yet (the caller saves them with the entry, in one statement)."""
        if not self.settings.protection or entry.kind != "entry" or entry.status != "FILLED":
            return [], []
        plans = [
            (kind, planned, order_type)
            for kind, planned, order_type in (
                ("stop_loss", entry.stop_loss, "STOP_MARKET"),
                ("take_profit", entry.take_profit, "TAKE_PROFIT_MARKET"),
            )
            if planned is not None and planned > 0
        ]
        if not plans:
            return [], []
        if filters is None:
            try:
                filters = (await self.filters(entry.symbol))[entry.symbol]
            except (ExchangeError, AmbiguousResponse, ExchangeHalted, KeyError) as error:
                logger.error("exchange: protection of %s not placed: %s", entry.client_order_id, error)
                return [], []
        side = "sell" if entry.side == "buy" else "buy"
        quantity = entry.executed_qty or entry.quantity
        # Re-anchored on the fill, as the positions stage does for the position's own SL/TP.
        scale = (
            entry.fill_price / entry.planned_entry
            if entry.fill_price and entry.planned_entry and entry.planned_entry > 0
            else Decimal(1)
        )
        assert filters is not None
        intents = [
            (self._protection_intent(entry, kind, side, quantity, filters.price(planned * scale)), order_type)
            for kind, planned, order_type in plans
        ]
        existing = await self.store.claim_many([intent for intent, _ in intents])
        results = await asyncio.gather(
            *(
                self._place_claimed(intent, order_type, existing.get(intent.client_order_id))
                for intent, order_type in intents
            )
        )
        return [intent for intent, _ in results], [intent for intent, saved in results if not saved]

    async def place_protection(
        self, entry: Intent, kind: str, order_type: str, side: str, quantity: Decimal, trigger: Decimal
    ) -> Intent:
        intent = self._protection_intent(entry, kind, side, quantity, trigger)
        placed, saved = await self._place_claimed(intent, order_type, await self.store.claim(intent))
        return placed if saved else await self.store.save(placed)

    def _protection_intent(self, entry: Intent, kind: str, side: str, quantity: Decimal, trigger: Decimal) -> Intent:
        """The reduce-only stop-loss or take-profit of an entry, its id derived from the entry's."""
        return Intent(
            client_order_id=protection_id(kind, entry.client_order_id),
            kind=kind,
            parent_client_order_id=entry.client_order_id,
            exchange=self.name,
            symbol=entry.symbol,
            side=side,
            quantity=quantity,
            reduce_only=True,
            trigger_price=trigger,
        )

    async def _place_claimed(self, intent: Intent, order_type: str, existing: Intent | None) -> tuple[Intent, bool]:
        """Send a claimed protection order (`existing` None) or settle the one claimed before; returns
        the intent and whether it is saved (a placed one is left to the caller to save)."""
        kind = intent.kind
        if existing is not None:
            if existing.status in UNSETTLED:
                return await self._resolve_algo(existing), True
            return existing, True
        params = {
            "algoType": "CONDITIONAL",
            "symbol": intent.symbol,
            "side": intent.side.upper(),
            "type": order_type,
            "quantity": plain(intent.quantity),
            "triggerPrice": plain(intent.trigger_price or Decimal(0)),
            "reduceOnly": "true",
            "workingType": "MARK_PRICE",
            "clientAlgoId": intent.client_order_id,
        }
        try:
            answer = parse.algo_answer(await self.rest.create("fapiPrivatePostAlgoOrder", params))
        except (AmbiguousResponse, parse.Malformed):
            intent = await self.store.save(intent.with_(status="UNKNOWN"))
            return await self._resolve_algo(intent), True
        except (ExchangeError, ExchangeHalted) as error:
            ORDERS.labels(kind, "rejected").inc()
            saved = await self.store.save(
                intent.with_(
                    status="REJECTED", reject_code=getattr(error, "code", None), reject_reason=str(error)[:200]
                )
            )
            await self._event(
                "protection",
                "critical",
                intent.symbol,
                f"{kind.replace('_', '-')} for {intent.symbol} not placed at the exchange: the position is not "
                f"protected while Phoenix95 is down ({str(error)[:120]})",
                client_order_id=intent.client_order_id,
            )
            return saved, True
        ORDERS.labels(kind, "placed").inc()
        return intent.with_(status="NEW", exchange_order_id=answer.algo_id), False

    async def _ask_algo(self, intent: Intent) -> parse.AlgoAnswer | None:
        try:
            answer = await self.rest.call("fapiPrivateGetAlgoOrder", {"clientAlgoId": intent.client_order_id})
        except ExchangeError as error:
            if error.code == -2013:
                return None
            raise
        return parse.algo_answer(answer)

    async def _resolve_algo(self, intent: Intent) -> Intent:
        for attempt in range(self.settings.resolve_attempts):
            try:
                found = await self._ask_algo(intent)
            except (AmbiguousResponse, parse.Malformed, ExchangeError, ExchangeHalted):
                found = None
            if found is not None:
                return await self._apply_algo(intent, found)
            if attempt + 1 < self.settings.resolve_attempts:
                await self._sleep(self.settings.resolve_interval_s)
        return await self.store.save(intent.with_(status="UNKNOWN"))

    async def _apply_algo(self, intent: Intent, answer: parse.AlgoAnswer) -> Intent:
        status = {
            "NEW": "NEW",
            "TRIGGERING": "TRIGGERED",
            "TRIGGERED": "TRIGGERED",
            "FINISHED": "TRIGGERED",
            "CANCELED": "CANCELED",
            "EXPIRED": "CANCELED",
            "REJECTED": "REJECTED",
        }.get(answer.status, "UNKNOWN")
        return await self.store.save(intent.with_(status=status, exchange_order_id=answer.algo_id))

    async def _cancel_algo(self, intent: Intent) -> Intent:
        try:
            await self.rest.call("fapiPrivateDeleteAlgoOrder", {"clientAlgoId": intent.client_order_id})
        except ExchangeError as error:
            if error.code not in (-2011, -2013):
                raise
            found = await self._ask_algo(intent)  # already fired, cancelled or expired: record what it is
            return await self._apply_algo(intent, found) if found is not None else intent
        ORDERS.labels(intent.kind, "cancelled").inc()
        return await self.store.save(intent.with_(status="CANCELED"))

    async def on_protection_update(self, client_algo_id: str, algo_status: str, actual_order_id: str = "") -> list[str]:
        """A protection order changed at the exchange (ALGO_UPDATE, or found by polling): when one fired,
        record the fills of the market order it became (under its own client id: the positions stage
        closes the position with them) and cancel the other. A fired order whose fills are not recorded
        yet (its TRIGGERING event carries no order id, or the stream dropped before the fills) stays
        `fills_missing` and is asked for again by `check_protection`. Returns what was done."""
        done: list[str] = []
        intents = await self.store.get([client_algo_id])
        intent = intents.get(client_algo_id)
        if intent is None or intent.kind not in ("stop_loss", "take_profit"):
            return done
        if algo_status in ("TRIGGERING", "TRIGGERED", "FINISHED"):
            fired_now = intent.status != "TRIGGERED"
            fired = intent.with_(status="TRIGGERED")
            if fills_missing(fired):
                if actual_order_id and actual_order_id != "0":
                    fired = await self._protection_fills(fired, actual_order_id)
                elif algo_status == "FINISHED":
                    fired = fired.with_(executed_qty=Decimal(0))  # finished without an order: nothing filled
            if fired_now or fired != intent.with_(status="TRIGGERED"):
                intent = await self.store.save(fired)
            if fired_now:
                done.append(f"{intent.kind} {client_algo_id} fired")
                await self._event(
                    "protection",
                    "warning",
                    intent.symbol,
                    f"{intent.kind.replace('_', '-')} of {intent.symbol} fired at the exchange",
                    client_order_id=client_algo_id,
                )
            elif intent.executed_qty:
                done.append(f"{intent.kind} {client_algo_id} fills recorded")
        if intent.status == "TRIGGERED" and intent.parent_client_order_id:
            for sibling in await self.store.children(intent.parent_client_order_id):
                if sibling.client_order_id != client_algo_id and sibling.status == "NEW":
                    cancelled = await self._cancel_algo(sibling)
                    done.append(f"{sibling.kind} {sibling.client_order_id} {cancelled.status.lower()}")
        elif algo_status in ("CANCELED", "EXPIRED", "REJECTED") and intent.status == "NEW":
            await self.store.save(intent.with_(status="CANCELED" if algo_status != "REJECTED" else "REJECTED"))
        return done

    async def check_protection(self) -> list[str]:
        """Poll the protection orders (the REST fallback of the user-data stream): any resting one no
        longer open at the exchange, and any that fired without its fills recorded, is asked for; the
        fills of one that fired are recorded and the other of the pair is cancelled."""
        resting = await self.store.with_status(["NEW"], ["stop_loss", "take_profit"])
        unfilled = [
            intent
            for intent in await self.store.with_status(
                ["TRIGGERED"], ["stop_loss", "take_profit"], created_after=datetime.now(UTC) - FILLS_WANTED_FOR
            )
            if fills_missing(intent)
        ]
        if not resting and not unfilled:
            return []
        open_ids: set[str] | None = set()
        if resting:
            answer = await self.rest.call("fapiPrivateGetOpenAlgoOrders", {})
            open_ids = {str(a.get("clientAlgoId")) for a in answer} if isinstance(answer, list) else None
        if open_ids is None:
            return []
        done: list[str] = []
        for intent in [*resting, *unfilled]:
            if intent.client_order_id in open_ids:
                continue
            found = await self._ask_algo(intent)
            if found is None:
                continue
            done += await self.on_protection_update(intent.client_order_id, found.status, found.actual_order_id)
        return done

    async def _protection_fills(self, intent: Intent, actual_order_id: str) -> Intent:
        """The fills (price, quantity, commission, trade ids) of the order a protection order became,
        recorded under the protection's client id; returns the intent with their totals (unchanged
        when they cannot be read yet: asked for again)."""
        try:
            trades = await self.rest.call(
                "fapiPrivateGetUserTrades", {"symbol": intent.symbol, "orderId": actual_order_id}, weight=5
            )
        except (ExchangeError, AmbiguousResponse, ExchangeHalted) as error:
            logger.warning(
                "exchange: fills of %s (order %s) not read: %s", intent.client_order_id, actual_order_id, error
            )
            return intent
        if not isinstance(trades, list) or not trades:
            return intent
        tagged, _ = await self.record_fills(
            [{**t, "clientOrderId": intent.client_order_id} for t in trades if isinstance(t, dict)], adopted=False
        )
        await self.store.tag_fills(self.name, intent.symbol, actual_order_id, intent.client_order_id)
        try:
            quantity = sum((parse.dec(t["qty"], "qty") for t in tagged), Decimal(0))
            notional = sum((parse.dec(t["price"], "price") * parse.dec(t["qty"], "qty") for t in tagged), Decimal(0))
            last = max(parse.ms_time(t["time"]) for t in tagged)
        except (parse.Malformed, KeyError, ValueError):
            return intent
        if quantity <= 0:
            return intent
        return intent.with_(
            executed_qty=quantity,
            fill_price=(notional / quantity).quantize(Decimal("0.00000001")),
            fee=commission_total(tagged),
            filled_at=last,
            trade_ids=tuple(str(t.get("id")) for t in tagged),
        )

    async def sync_funding(self, hours: float = 24) -> int:
        """Funding payments of the last `hours` from the income history (idempotent by tran id)."""
        since = int((datetime.now(UTC) - timedelta(hours=hours)).timestamp() * 1000)
        answer = await self.rest.call(
            "fapiPrivateGetIncome", {"incomeType": "FUNDING_FEE", "startTime": since, "limit": 1000}, weight=30
        )
        if not isinstance(answer, list):
            raise parse.Malformed("income answer is not a list")
        return await self.store.record_income(self.name, parse.income_rows(answer))

    async def _after_exit(self, exit_intent: Intent, entry_client_order_id: str | None = None) -> None:
        """Phoenix95 closed a position: cancel the protection of the entry that opened it, and once the
        exchange is flat every resting protection of the symbol."""
        if entry_client_order_id:
            for child in await self.store.children(entry_client_order_id):
                if child.kind in ("stop_loss", "take_profit") and child.status == "NEW":
                    try:
                        await self._cancel_algo(child)
                    except (ExchangeError, AmbiguousResponse, ExchangeHalted, parse.Malformed) as error:
                        logger.warning("exchange: %s not cancelled after its close: %s", child.client_order_id, error)
        try:
            rows = parse.positions(
                await self.rest.call("fapiPrivateV2GetPositionRisk", {"symbol": exit_intent.symbol}, weight=5)
            )
        except (ExchangeError, AmbiguousResponse, ExchangeHalted, parse.Malformed) as error:
            logger.warning("exchange: position of %s not read after an exit: %s", exit_intent.symbol, error)
            return
        if not rows:
            await self.cancel_all(exit_intent.symbol)

    async def positions(self) -> list[parse.ExchangePosition]:
        return parse.positions(await self.rest.call("fapiPrivateV2GetPositionRisk", {}, weight=5))
