"""A Binance USDⓈ-M futures simulator: an aiohttp server on a free 127.0.0.1 port speaking the REST
endpoints, the user-data stream and the market streams the connector uses, with Binance's documented
request signing and error codes, and switches for the faults live trading has to survive.

Documented behaviour it follows (developers.binance.com, derivatives/usds-margined-futures):
- SIGNED endpoints: ``timestamp`` and ``signature`` = HMAC-SHA256(secret, totalParams), totalParams
  being the query string concatenated with the body; ``X-MBX-APIKEY`` header. A bad key answers 401
  ``-2015``, a bad signature ``-1022``, a timestamp outside ``recvWindow`` (default 5,000 ms) or more
  than 1 s ahead of the server ``-1021``.
- Every response carries ``X-MBX-USED-WEIGHT-1M``; over the limit the answer is 429 ``-1003`` with
  ``Retry-After``; a client that keeps calling before then is banned: 418 with ``Retry-After``.
- ``-1006`` / ``-1007`` (HTTP 503): the execution status is unknown; the order may or may not exist.
- Conditional types (STOP_MARKET, TAKE_PROFIT_MARKET, ...) on ``/fapi/v1/order`` answer ``-4120``
  since December 2025: they go to the Algo Order API (``/fapi/v1/algoOrder``, ``algoType=CONDITIONAL``,
  ``triggerPrice``, ``clientAlgoId``).
- ``newClientOrderId`` is unique among *open* orders only (a filled one may be reused: this simulator
  accepts it again, as Binance does, which is why the connector never re-sends a create).
- An unknown order answers 400 ``-2013`` "Order does not exist.".

Market orders fill at once at the symbol's mark price in one-way mode; a conditional order triggers
when the mark price crosses its trigger (``set_mark``) and becomes a reduce-only market order.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
from collections import deque
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web

TAKER_FEE = Decimal("0.0004")
CONDITIONAL_TYPES = {"STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"}

SYMBOLS: dict[str, dict[str, str]] = {
    "BTCUSDT": {"tick": "0.10", "step": "0.001", "min_qty": "0.001", "min_notional": "100", "mark": "60000"},
    "ETHUSDT": {"tick": "0.01", "step": "0.001", "min_qty": "0.001", "min_notional": "20", "mark": "3000"},
    "SOLUSDT": {"tick": "0.0100", "step": "1", "min_qty": "1", "min_notional": "5", "mark": "150"},
    "XRPUSDT": {"tick": "0.0001", "step": "0.1", "min_qty": "0.1", "min_notional": "5", "mark": "1.19"},
}


@dataclass
class Fault:
    """One armed fault: ``kind`` on the next ``count`` requests to ``path`` (any path when empty).

    kinds: ``lose_response`` (the request is executed, then the connection is dropped without an
    answer), ``-1006`` / ``-1007`` (503; executed first when ``execute``), ``429`` (then 418 for a
    client that does not wait), ``418``, ``-1021``, ``malformed`` (executed, answered with a body
    that is not the documented shape)."""

    kind: str
    path: str = ""
    method: str = ""
    count: int = 1
    execute: bool = True
    retry_after: int = 1


@dataclass
class Key:
    secret: str
    can_trade: bool = True
    withdrawals: bool = False
    ip_restrict: bool = True


@dataclass
class SimOrder:
    order_id: int
    client_order_id: str
    symbol: str
    side: str
    type: str
    quantity: Decimal
    reduce_only: bool
    status: str
    avg_price: Decimal
    executed: Decimal
    time: int
    update_time: int

    def json(self) -> dict[str, Any]:
        return {
            "orderId": self.order_id,
            "symbol": self.symbol,
            "status": self.status,
            "clientOrderId": self.client_order_id,
            "price": "0",
            "avgPrice": str(self.avg_price),
            "origQty": str(self.quantity),
            "executedQty": str(self.executed),
            "cumQuote": str(self.avg_price * self.executed),
            "timeInForce": "GTC",
            "type": self.type,
            "reduceOnly": self.reduce_only,
            "closePosition": False,
            "side": self.side,
            "positionSide": "BOTH",
            "stopPrice": "0",
            "workingType": "CONTRACT_PRICE",
            "priceProtect": False,
            "origType": self.type,
            "priceMatch": "NONE",
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "goodTillDate": 0,
            "time": self.time,
            "updateTime": self.update_time,
        }


@dataclass
class AlgoOrder:
    algo_id: int
    client_algo_id: str
    symbol: str
    side: str
    order_type: str
    quantity: Decimal
    trigger_price: Decimal
    reduce_only: bool
    status: str
    create_time: int
    update_time: int
    trigger_time: int = 0
    actual_order_id: str = ""
    avg_price: Decimal = Decimal(0)
    executed: Decimal = Decimal(0)

    def json(self) -> dict[str, Any]:
        return {
            "algoId": self.algo_id,
            "clientAlgoId": self.client_algo_id,
            "algoType": "CONDITIONAL",
            "orderType": self.order_type,
            "symbol": self.symbol,
            "side": self.side,
            "positionSide": "BOTH",
            "timeInForce": "GTC",
            "quantity": str(self.quantity),
            "algoStatus": self.status,
            "actualOrderId": self.actual_order_id,
            "actualPrice": str(self.avg_price),
            "triggerPrice": str(self.trigger_price),
            "price": "0",
            "icebergQuantity": None,
            "tpTriggerPrice": "0",
            "tpPrice": "0",
            "slTriggerPrice": "0",
            "slPrice": "0",
            "tpOrderType": "",
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "workingType": "CONTRACT_PRICE",
            "priceMatch": "NONE",
            "closePosition": False,
            "priceProtect": False,
            "reduceOnly": self.reduce_only,
            "createTime": self.create_time,
            "updateTime": self.update_time,
            "triggerTime": self.trigger_time,
            "goodTillDate": 0,
        }


@dataclass
class Position:
    amount: Decimal = Decimal(0)
    entry: Decimal = Decimal(0)
    margin: Decimal = Decimal(0)
    update_time: int = 0


class BinanceError(Exception):
    def __init__(self, status: int, code: int, msg: str, headers: dict[str, str] | None = None):
        super().__init__(msg)
        self.status = status
        self.code = code
        self.msg = msg
        self.headers = headers or {}


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str]
    status: int = 0


@dataclass
class SimState:
    keys: dict[str, Key] = field(default_factory=dict)
    marks: dict[str, Decimal] = field(default_factory=dict)
    orders: dict[int, SimOrder] = field(default_factory=dict)
    algo: dict[int, AlgoOrder] = field(default_factory=dict)
    trades: list[dict[str, Any]] = field(default_factory=list)
    income: list[dict[str, Any]] = field(default_factory=list)
    positions: dict[str, Position] = field(default_factory=dict)
    leverage: dict[str, int] = field(default_factory=dict)
    margin_type: dict[str, str] = field(default_factory=dict)
    balance: Decimal = Decimal("10000")
    klines: dict[str, list[list[Any]]] = field(default_factory=dict)


class BinanceSimulator:
    """``async with BinanceSimulator() as sim:`` serves on ``sim.base_url`` (REST) and ``sim.ws_url``."""

    def __init__(self, *, api_key: str = "sim-key", api_secret: str = "sim-secret", weight_limit: int = 2400):
        self.state = SimState()
        self.state.keys[api_key] = Key(api_secret)
        for symbol, spec in SYMBOLS.items():
            self.state.marks[symbol] = Decimal(spec["mark"])
        self.weight_limit = weight_limit
        #: Commissions paid in this asset ("BNB": converted at ``asset_prices``, with Binance's 10 %
        #: BNB fee discount), else in USDT.
        self.commission_asset = "USDT"
        #: USDT prices of assets that are not traded here but have a ticker (``/fapi/v1/ticker/price``).
        self.asset_prices: dict[str, Decimal] = {"BNBUSDT": Decimal("612.34")}
        #: Symbols whose price cannot be read (``ticker/price`` and ``klines`` answer 503 / -1008).
        self.prices_down: set[str] = set()
        #: The user-data stream refuses connections (a websocket outage: only REST works).
        self.user_stream_down = False
        #: The user-data sockets are dropped right after a conditional order's TRIGGERING event, before
        #: the order it became and its fills are reported (a stream that misses them).
        self.drop_user_stream_on_trigger = False
        self.faults: list[Fault] = []
        #: Server clock minus the real clock, in ms (a client that does not sync gets -1021).
        self.clock_skew_ms = 0
        self.requests: list[Request] = []
        self._ids = itertools.count(8_389_765_000)
        self._trade_ids = itertools.count(1)
        self._weights: deque[tuple[float, int]] = deque()
        self._retry_until = 0.0
        self._banned_until = 0.0
        self._listen_keys: dict[str, float] = {}
        self._user_sockets: dict[str, list[web.WebSocketResponse]] = {}
        self._market_sockets: list[tuple[web.WebSocketResponse, set[str]]] = []
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.banned = 0
        self.lock = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> BinanceSimulator:
        app = web.Application()
        app.router.add_route("*", "/ws/{key}", self._ws_user_or_stream)
        app.router.add_route("GET", "/stream", self._ws_combined)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        await self.drop_websockets()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> BinanceSimulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    # -- test controls ---------------------------------------------------------------------------

    def inject(
        self, kind: str, path: str = "", *, method: str = "", count: int = 1, execute: bool = True, retry_after: int = 1
    ) -> Fault:
        fault = Fault(kind, path, method, count, execute, retry_after)
        self.faults.append(fault)
        return fault

    def server_ms(self) -> int:
        return int(time.time() * 1000) + self.clock_skew_ms

    def orders_for(self, client_order_id: str) -> list[SimOrder]:
        """Every order the exchange accepted with this client order id (a duplicate shows as two)."""
        return [o for o in self.state.orders.values() if o.client_order_id == client_order_id]

    def order_creates(self) -> int:
        """POSTs to /fapi/v1/order that reached the matching engine (including those whose answer was lost)."""
        return len(self.state.orders)

    def duplicates(self) -> int:
        seen: dict[str, int] = {}
        for order in self.state.orders.values():
            if order.client_order_id.startswith("p95-"):
                seen[order.client_order_id] = seen.get(order.client_order_id, 0) + 1
        return sum(n - 1 for n in seen.values() if n > 1)

    def requests_to(self, path: str, method: str = "") -> list[Request]:
        return [r for r in self.requests if r.path == path and (not method or r.method == method)]

    async def set_mark(self, symbol: str, price: Decimal | str) -> None:
        """Move the mark price: conditional orders whose trigger it crosses fire; the market streams publish it."""
        async with self.lock:
            self.state.marks[symbol] = Decimal(str(price))
            fired = [
                a for a in self.state.algo.values() if a.symbol == symbol and a.status == "NEW" and self._crossed(a)
            ]
            for algo in fired:
                await self._fire(algo)
        await self._publish_mark(symbol)

    async def fire_algo(self, client_algo_id: str) -> None:
        """A stop order fired at the exchange (e.g. while Phoenix95 was down)."""
        async with self.lock:
            for algo in self.state.algo.values():
                if algo.client_algo_id == client_algo_id and algo.status == "NEW":
                    await self._fire(algo)

    async def external_order(
        self, symbol: str, side: str, quantity: Decimal | str, client_order_id: str = ""
    ) -> SimOrder:
        """An order Phoenix95 did not send (placed by hand in the Binance app): a fill while it was down."""
        async with self.lock:
            return await self._market_order(
                symbol, side, Decimal(str(quantity)), client_order_id or f"web_{next(self._ids)}", reduce_only=False
            )

    async def close_position(self, symbol: str) -> SimOrder | None:
        """Close the whole position at the exchange (by hand, or a liquidation)."""
        async with self.lock:
            position = self.state.positions.get(symbol)
            if position is None or position.amount == 0:
                return None
            side = "SELL" if position.amount > 0 else "BUY"
            return await self._market_order(
                symbol, side, abs(position.amount), f"web_{next(self._ids)}", reduce_only=True
            )

    async def pay_funding(self, symbol: str, amount: Decimal | str, *, at_ms: int | None = None) -> None:
        """A funding payment (`at_ms`: its time, when it is reported later than it was made)."""
        async with self.lock:
            amount = Decimal(str(amount))
            self.state.balance += amount
            self.state.income.append(
                {
                    "symbol": symbol,
                    "incomeType": "FUNDING_FEE",
                    "income": str(amount),
                    "asset": "USDT",
                    "info": "FUNDING_FEE",
                    "time": at_ms if at_ms is not None else self.server_ms(),
                    "tranId": next(self._ids),
                    "tradeId": "",
                }
            )
        await self._user_event(
            {
                "e": "ACCOUNT_UPDATE",
                "E": self.server_ms(),
                "T": self.server_ms(),
                "a": {
                    "m": "FUNDING_FEE",
                    "B": [
                        {"a": "USDT", "wb": str(self.state.balance), "cw": str(self.state.balance), "bc": str(amount)}
                    ],
                    "P": [],
                },
            }
        )

    async def drop_websockets(self) -> int:
        sockets = [ws for wss in self._user_sockets.values() for ws in wss] + [ws for ws, _ in self._market_sockets]
        self._user_sockets.clear()
        self._market_sockets.clear()
        for ws in sockets:
            await ws.close(code=1006)
        return len(sockets)

    def add_kline(self, symbol: str, open_time_ms: int, o: str, h: str, low: str, c: str, v: str) -> None:
        self.state.klines.setdefault(symbol, []).append(
            [open_time_ms, o, h, low, c, v, open_time_ms + 59_999, str(Decimal(c) * Decimal(v)), 10, "0", "0", "0"]
        )

    def trade_kline(self, symbol: str, at_ms: int, price: Decimal) -> None:
        """Record `price` in `symbol`'s 1-minute kline containing `at_ms` (served by /fapi/v1/klines)."""
        minute = at_ms - at_ms % 60_000
        for row in self.state.klines.setdefault(symbol, []):
            if row[0] == minute:
                row[2] = str(max(Decimal(row[2]), price))
                row[3] = str(min(Decimal(row[3]), price))
                row[4] = str(price)
                return
        self.add_kline(symbol, minute, str(price), str(price), str(price), str(price), "1")
        self.state.klines[symbol].sort(key=lambda row: row[0])

    async def publish_kline(
        self, symbol: str, open_time_ms: int, o: str, h: str, low: str, c: str, v: str, closed: bool = True
    ) -> None:
        if closed:
            self.add_kline(symbol, open_time_ms, o, h, low, c, v)
        payload = {
            "e": "kline",
            "E": self.server_ms(),
            "s": symbol,
            "k": {
                "t": open_time_ms,
                "T": open_time_ms + 59_999,
                "s": symbol,
                "i": "1m",
                "o": o,
                "c": c,
                "h": h,
                "l": low,
                "v": v,
                "n": 10,
                "x": closed,
                "q": "0",
                "V": "0",
                "Q": "0",
                "B": "0",
            },
        }
        await self._publish(f"{symbol.lower()}@kline_1m", payload)

    # -- matching --------------------------------------------------------------------------------

    @staticmethod
    def _crossed_price(algo: AlgoOrder, mark: Decimal) -> bool:
        stop = algo.order_type.startswith("STOP")
        if algo.side == "SELL":  # protects a long: a stop fires below, a take-profit above
            return mark <= algo.trigger_price if stop else mark >= algo.trigger_price
        return mark >= algo.trigger_price if stop else mark <= algo.trigger_price

    def _crossed(self, algo: AlgoOrder) -> bool:
        return self._crossed_price(algo, self.state.marks[algo.symbol])

    async def _fire(self, algo: AlgoOrder) -> None:
        now = self.server_ms()
        algo.status = "TRIGGERING"
        algo.trigger_time = now
        # As Binance reports it: TRIGGERING (no order yet), then FINISHED with the order it became.
        await self._algo_event(algo, now)
        if self.drop_user_stream_on_trigger:
            # Nothing more reaches them; they close in the background (a close handshake awaited here,
            # under the lock, would wait for a client busy asking this server about the event).
            sockets = [ws for wss in self._user_sockets.values() for ws in wss]
            self._user_sockets.clear()
            for ws in sockets:
                asyncio.get_running_loop().create_task(ws.close(code=1006))
        algo.status = "TRIGGERED"
        position = self.state.positions.get(algo.symbol, Position())
        quantity = min(algo.quantity, abs(position.amount)) if algo.reduce_only else algo.quantity
        if quantity > 0:
            order = await self._market_order(
                algo.symbol,
                algo.side,
                quantity,
                f"algo_{algo.algo_id}",
                reduce_only=algo.reduce_only,
                order_type=algo.order_type,
            )
            algo.actual_order_id = str(order.order_id)
            algo.avg_price = order.avg_price
            algo.executed = order.executed
        algo.status = "FINISHED"
        algo.update_time = self.server_ms()
        await self._algo_event(algo, now)

    async def _algo_event(self, algo: AlgoOrder, now: int) -> None:
        await self._user_event(
            {
                "e": "ALGO_UPDATE",
                "T": now,
                "E": now,
                "o": {
                    "caid": algo.client_algo_id,
                    "aid": algo.algo_id,
                    "at": "CONDITIONAL",
                    "o": algo.order_type,
                    "s": algo.symbol,
                    "S": algo.side,
                    "ps": "BOTH",
                    "f": "GTC",
                    "q": str(algo.quantity),
                    "X": algo.status,
                    "ai": algo.actual_order_id,
                    "ap": str(algo.avg_price),
                    "aq": str(algo.executed),
                    "act": "0",
                    "tp": str(algo.trigger_price),
                    "p": "0",
                    "R": algo.reduce_only,
                },
            }
        )

    async def _market_order(
        self,
        symbol: str,
        side: str,
        quantity: Decimal,
        client_order_id: str,
        *,
        reduce_only: bool,
        order_type: str = "MARKET",
    ) -> SimOrder:
        now = self.server_ms()
        mark = self.state.marks[symbol]
        position = self.state.positions.setdefault(symbol, Position())
        signed = quantity if side == "BUY" else -quantity
        if reduce_only:
            if position.amount == 0 or (position.amount > 0) == (signed > 0):
                raise BinanceError(400, -2022, "ReduceOnly Order is rejected.")
            signed = max(-abs(position.amount), min(abs(position.amount), signed))
            quantity = abs(signed)
        order = SimOrder(
            next(self._ids),
            client_order_id,
            symbol,
            side,
            order_type,
            quantity,
            reduce_only,
            "FILLED",
            mark,
            quantity,
            now,
            now,
        )
        self.state.orders[order.order_id] = order
        commission = (mark * quantity * TAKER_FEE).quantize(Decimal("0.00000001"))
        commission_asset = self.commission_asset
        if commission_asset != "USDT":  # paid in BNB: 10 % off, at BNB's price
            bnb_price = self.asset_prices[f"{commission_asset}USDT"]
            commission = (commission * Decimal("0.9") / bnb_price).quantize(Decimal("0.00000001"))
            self.trade_kline(f"{commission_asset}USDT", now, bnb_price)
        realized = Decimal(0)
        if position.amount != 0 and (position.amount > 0) != (signed > 0):
            closed = min(abs(signed), abs(position.amount))
            direction = 1 if position.amount > 0 else -1
            realized = (mark - position.entry) * closed * direction
        new_amount = position.amount + signed
        if new_amount == 0:
            position.entry = Decimal(0)
        elif position.amount == 0 or (position.amount > 0) == (signed > 0):
            position.entry = (position.entry * abs(position.amount) + mark * abs(signed)) / abs(new_amount)
        elif (new_amount > 0) != (position.amount > 0):
            position.entry = mark
        position.amount = new_amount
        position.update_time = now
        lev = self.state.leverage.get(symbol, 20)
        position.margin = abs(position.amount) * position.entry / lev if position.amount else Decimal(0)
        self.state.balance += realized - (commission if commission_asset == "USDT" else 0)
        trade = {
            "symbol": symbol,
            "id": next(self._trade_ids),
            "orderId": order.order_id,
            "side": side,
            "price": str(mark),
            "qty": str(quantity),
            "realizedPnl": str(realized),
            "quoteQty": str(mark * quantity),
            "commission": str(commission),
            "commissionAsset": commission_asset,
            "time": now,
            "positionSide": "BOTH",
            "buyer": side == "BUY",
            "maker": False,
        }
        self.state.trades.append(trade)
        if position.amount == 0:  # Binance cancels reduce-only conditional orders of a closed position? not
            pass  # automatically for algo orders: Phoenix95 has to cancel the other one.
        await self._user_event(
            {
                "e": "ORDER_TRADE_UPDATE",
                "E": now,
                "T": now,
                "o": {
                    "s": symbol,
                    "c": client_order_id,
                    "S": side,
                    "o": order_type,
                    "f": "GTC",
                    "q": str(quantity),
                    "p": "0",
                    "ap": str(mark),
                    "sp": "0",
                    "x": "TRADE",
                    "X": "FILLED",
                    "i": order.order_id,
                    "l": str(quantity),
                    "z": str(quantity),
                    "L": str(mark),
                    "N": commission_asset,
                    "n": str(commission),
                    "T": now,
                    "t": trade["id"],
                    "b": "0",
                    "a": "0",
                    "m": False,
                    "R": reduce_only,
                    "wt": "CONTRACT_PRICE",
                    "ot": order_type,
                    "ps": "BOTH",
                    "cp": False,
                    "rp": str(realized),
                },
            }
        )
        await self._user_event(
            {
                "e": "ACCOUNT_UPDATE",
                "E": now,
                "T": now,
                "a": {
                    "m": "ORDER",
                    "B": [{"a": "USDT", "wb": str(self.state.balance), "cw": str(self.state.balance), "bc": "0"}],
                    "P": [
                        {
                            "s": symbol,
                            "pa": str(position.amount),
                            "ep": str(position.entry),
                            "cr": "0",
                            "up": "0",
                            "mt": "isolated",
                            "iw": str(position.margin),
                            "ps": "BOTH",
                        }
                    ],
                },
            }
        )
        return order

    # -- HTTP ------------------------------------------------------------------------------------

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if (
                fault.count > 0
                and (not fault.path or fault.path == path)
                and (not fault.method or fault.method == method)
            ):
                fault.count -= 1
                if fault.count == 0:
                    self.faults.remove(fault)
                return fault
        return None

    def _weight_headers(self, weight: int) -> dict[str, str]:
        now = time.monotonic()
        self._weights.append((now, weight))
        while self._weights and now - self._weights[0][0] > 60:
            self._weights.popleft()
        used = sum(w for _, w in self._weights)
        return {"X-MBX-USED-WEIGHT-1M": str(used)}

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        body = await request.text() if request.can_read_body else ""
        params = dict(parse_qsl(request.query_string, keep_blank_values=True))
        params.update(dict(parse_qsl(body, keep_blank_values=True)))
        record = Request(request.method, path, params)
        self.requests.append(record)
        headers: dict[str, str] = {}
        try:
            now = time.monotonic()
            if now < self._banned_until:
                raise BinanceError(
                    418,
                    -1003,
                    "Way too many requests; IP banned until later. Please use the websocket"
                    " for live updates to avoid bans.",
                    {"Retry-After": str(int(self._banned_until - now) + 1)},
                )
            if now < self._retry_until:
                self._banned_until = now + 120
                self.banned += 1
                raise BinanceError(
                    418,
                    -1003,
                    "Way too many requests; IP banned for calling during Retry-After.",
                    {"Retry-After": "120"},
                )
            if path in ("/fapi/v1/order", "/fapi/v1/algoOrder") and request.method in ("POST", "DELETE"):
                weight = 0  # orders count against the order limits, not the IP's request weight
            elif path.endswith(("userTrades", "positionRisk", "balance", "account")):
                weight = 5
            else:
                weight = 1
            headers = self._weight_headers(weight)
            if int(headers["X-MBX-USED-WEIGHT-1M"]) > self.weight_limit:
                self._retry_until = now + 1
                raise BinanceError(
                    429,
                    -1003,
                    f"Too many requests; current limit is {self.weight_limit} requests per minute.",
                    {"Retry-After": "1"},
                )
            fault = self._take_fault(request.method, path)
            if fault is not None and fault.kind in ("429", "418", "-1021"):
                if fault.kind == "429":
                    self._retry_until = now + fault.retry_after
                    raise BinanceError(
                        429,
                        -1003,
                        "Too many requests; current limit is 2400 requests per minute.",
                        {"Retry-After": str(fault.retry_after)},
                    )
                if fault.kind == "418":
                    self._banned_until = now + fault.retry_after
                    self.banned += 1
                    raise BinanceError(
                        418, -1003, "Way too many requests; IP banned.", {"Retry-After": str(fault.retry_after)}
                    )
                raise BinanceError(400, -1021, "Timestamp for this request is outside of the recvWindow.")
            handler = self._route(request.method, path)
            signed = path.startswith(
                (
                    "/fapi/v1/order",
                    "/fapi/v1/algoOrder",
                    "/fapi/v1/openOrders",
                    "/fapi/v1/openAlgoOrders",
                    "/fapi/v1/userTrades",
                    "/fapi/v2/",
                    "/fapi/v3/",
                    "/fapi/v1/leverage",
                    "/fapi/v1/marginType",
                    "/fapi/v1/income",
                    "/fapi/v1/allOpenOrders",
                    "/fapi/v1/algoOpenOrders",
                    "/sapi/",
                )
            )
            if path == "/fapi/v1/listenKey":
                self._check_key(request)
            elif signed:
                key = self._check_key(request)
                self._check_signature(request.query_string, body, params, key)
            if fault is not None and fault.kind in ("-1006", "-1007") and not fault.execute:
                raise self._unknown(fault.kind)
            async with self.lock:
                result = await handler(params)
            if fault is not None:
                if fault.kind == "lose_response":
                    record.status = -1
                    if request.transport is not None:
                        request.transport.abort()
                    return web.Response(status=500)
                if fault.kind in ("-1006", "-1007"):
                    raise self._unknown(fault.kind)
                if fault.kind == "malformed":
                    record.status = 200
                    return web.Response(
                        status=200, text='{"unexpected": tru', headers=headers, content_type="application/json"
                    )
            record.status = 200
            return web.json_response(result, headers=headers, dumps=lambda o: json.dumps(o, default=str))
        except BinanceError as error:
            record.status = error.status
            headers.update(error.headers)
            return web.json_response({"code": error.code, "msg": error.msg}, status=error.status, headers=headers)

    @staticmethod
    def _unknown(kind: str) -> BinanceError:
        if kind == "-1006":
            return BinanceError(
                503, -1006, "An unexpected response was received from the message bus. Execution status unknown."
            )
        return BinanceError(
            503,
            -1007,
            "Timeout waiting for response from backend server. Send status unknown; execution status unknown.",
        )

    def _check_key(self, request: web.Request) -> Key:
        key = self.state.keys.get(request.headers.get("X-MBX-APIKEY", ""))
        if key is None:
            raise BinanceError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        return key

    def _check_signature(self, query: str, body: str, params: dict[str, str], key: Key) -> None:
        total = query + body
        if "&signature=" not in total and not total.startswith("signature="):
            raise BinanceError(
                400, -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed."
            )
        payload, _, signature = total.rpartition("&signature=")
        expected = hmac.new(key.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise BinanceError(400, -1022, "Signature for this request is not valid.")
        timestamp = int(params.get("timestamp", "0"))
        window = int(params.get("recvWindow", "5000"))
        server = self.server_ms()
        if timestamp >= server + 1000 or server - timestamp > window:
            raise BinanceError(400, -1021, "Timestamp for this request is outside of the recvWindow.")

    def _route(self, method: str, path: str) -> Any:
        routes = {
            ("GET", "/fapi/v1/ping"): self._ping,
            ("GET", "/fapi/v1/time"): self._time,
            ("GET", "/fapi/v1/exchangeInfo"): self._exchange_info,
            ("GET", "/fapi/v1/premiumIndex"): self._premium_index,
            ("GET", "/fapi/v1/ticker/price"): self._ticker_price,
            ("GET", "/fapi/v1/klines"): self._klines,
            ("POST", "/fapi/v1/order"): self._new_order,
            ("GET", "/fapi/v1/order"): self._get_order,
            ("DELETE", "/fapi/v1/order"): self._cancel_order,
            ("GET", "/fapi/v1/openOrders"): self._open_orders,
            ("DELETE", "/fapi/v1/allOpenOrders"): self._cancel_all,
            ("POST", "/fapi/v1/algoOrder"): self._new_algo,
            ("GET", "/fapi/v1/algoOrder"): self._get_algo,
            ("DELETE", "/fapi/v1/algoOrder"): self._cancel_algo,
            ("GET", "/fapi/v1/openAlgoOrders"): self._open_algo,
            ("DELETE", "/fapi/v1/algoOpenOrders"): self._cancel_all_algo,
            ("GET", "/fapi/v1/userTrades"): self._user_trades,
            ("GET", "/fapi/v1/income"): self._income,
            ("GET", "/fapi/v2/positionRisk"): self._position_risk,
            ("GET", "/fapi/v3/positionRisk"): self._position_risk,
            ("GET", "/fapi/v2/balance"): self._balance,
            ("GET", "/fapi/v3/balance"): self._balance,
            ("POST", "/fapi/v1/leverage"): self._set_leverage,
            ("POST", "/fapi/v1/marginType"): self._set_margin_type,
            ("POST", "/fapi/v1/listenKey"): self._new_listen_key,
            ("PUT", "/fapi/v1/listenKey"): self._keep_listen_key,
            ("DELETE", "/fapi/v1/listenKey"): self._close_listen_key,
            ("GET", "/sapi/v1/account/apiRestrictions"): self._api_restrictions,
        }
        handler = routes.get((method, path))
        if handler is None:
            raise BinanceError(404, -1000, f"unknown endpoint {method} {path}")
        return handler

    def _symbol(self, params: dict[str, str]) -> str:
        symbol = params.get("symbol", "")
        if symbol not in SYMBOLS:
            raise BinanceError(400, -1121, "Invalid symbol.")
        return symbol

    async def _ping(self, params: dict[str, str]) -> Any:
        return {}

    async def _time(self, params: dict[str, str]) -> Any:
        return {"serverTime": self.server_ms()}

    async def _exchange_info(self, params: dict[str, str]) -> Any:
        symbols = []
        for symbol, spec in SYMBOLS.items():
            symbols.append(
                {
                    "symbol": symbol,
                    "pair": symbol,
                    "contractType": "PERPETUAL",
                    "deliveryDate": 4133404800000,
                    "onboardDate": 1569398400000,
                    "status": "TRADING",
                    "baseAsset": symbol[:-4],
                    "quoteAsset": "USDT",
                    "marginAsset": "USDT",
                    "pricePrecision": 2,
                    "quantityPrecision": 3,
                    "baseAssetPrecision": 8,
                    "quotePrecision": 8,
                    "underlyingType": "COIN",
                    "settlePlan": 0,
                    "triggerProtect": "0.0500",
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": spec["tick"],
                            "maxPrice": "4529764",
                            "tickSize": spec["tick"],
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "stepSize": spec["step"],
                            "maxQty": "1000",
                            "minQty": spec["min_qty"],
                        },
                        {
                            "filterType": "MARKET_LOT_SIZE",
                            "stepSize": spec["step"],
                            "maxQty": "120",
                            "minQty": spec["min_qty"],
                        },
                        {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                        {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                        {"filterType": "MIN_NOTIONAL", "notional": spec["min_notional"]},
                        {
                            "filterType": "PERCENT_PRICE",
                            "multiplierUp": "1.0500",
                            "multiplierDown": "0.9500",
                            "multiplierDecimal": "4",
                        },
                    ],
                    "orderTypes": [
                        "LIMIT",
                        "MARKET",
                        "STOP",
                        "STOP_MARKET",
                        "TAKE_PROFIT",
                        "TAKE_PROFIT_MARKET",
                        "TRAILING_STOP_MARKET",
                    ],
                    "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
                }
            )
        return {
            "timezone": "UTC",
            "serverTime": self.server_ms(),
            "futuresType": "U_MARGINED",
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": self.weight_limit},
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            ],
            "exchangeFilters": [],
            "assets": [],
            "symbols": symbols,
        }

    async def _premium_index(self, params: dict[str, str]) -> Any:
        def one(symbol: str) -> dict[str, Any]:
            return {
                "symbol": symbol,
                "markPrice": str(self.state.marks[symbol]),
                "indexPrice": str(self.state.marks[symbol]),
                "estimatedSettlePrice": str(self.state.marks[symbol]),
                "lastFundingRate": "0.00010000",
                "interestRate": "0.00010000",
                "nextFundingTime": (self.server_ms() // 28_800_000 + 1) * 28_800_000,
                "time": self.server_ms(),
            }

        if "symbol" in params:
            return one(self._symbol(params))
        return [one(s) for s in SYMBOLS]

    def _price_down(self, symbol: str) -> None:
        if symbol in self.prices_down:
            raise BinanceError(503, -1008, "Server is currently overloaded with other requests. Please try again.")

    async def _ticker_price(self, params: dict[str, str]) -> Any:
        symbol = params.get("symbol", "")
        self._price_down(symbol)
        price = self.state.marks.get(symbol) or self.asset_prices.get(symbol)
        if price is None:
            raise BinanceError(400, -1121, "Invalid symbol.")
        return {"symbol": symbol, "price": str(price), "time": self.server_ms()}

    async def _klines(self, params: dict[str, str]) -> Any:
        symbol = params.get("symbol", "")
        if symbol not in SYMBOLS and symbol not in self.asset_prices and symbol not in self.state.klines:
            raise BinanceError(400, -1121, "Invalid symbol.")
        self._price_down(symbol)
        start = int(params.get("startTime", "0"))
        end = int(params.get("endTime", str(2**62)))
        limit = int(params.get("limit", "500"))
        rows = [k for k in self.state.klines.get(symbol, []) if start <= k[0] <= end]
        return rows[:limit]

    async def _new_order(self, params: dict[str, str]) -> Any:
        symbol = self._symbol(params)
        order_type = params.get("type", "")
        if order_type in CONDITIONAL_TYPES:
            raise BinanceError(
                400,
                -4120,
                "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead.",
            )
        if order_type != "MARKET":
            raise BinanceError(400, -1116, "Invalid orderType.")
        client_id = params.get("newClientOrderId") or f"sim_{next(self._ids)}"
        # newClientOrderId is unique among open orders only: market orders fill at once, so a re-sent id
        # makes a second order here, exactly as on Binance.
        quantity = Decimal(params.get("quantity", "0"))
        step = Decimal(SYMBOLS[symbol]["step"])
        if quantity <= 0 or quantity % step != 0:
            raise BinanceError(400, -1111, "Precision is over the maximum defined for this asset.")
        if (
            quantity * self.state.marks[symbol] < Decimal(SYMBOLS[symbol]["min_notional"])
            and params.get("reduceOnly") != "true"
        ):
            raise BinanceError(
                400,
                -4164,
                f"Order's notional must be no smaller than {SYMBOLS[symbol]['min_notional']} (unless you choose"
                " reduce only).",
            )
        order = await self._market_order(
            symbol, params.get("side", "BUY"), quantity, client_id, reduce_only=params.get("reduceOnly") == "true"
        )
        return order.json()

    def _find_order(self, params: dict[str, str]) -> SimOrder:
        symbol = self._symbol(params)
        if "orderId" in params:
            order = self.state.orders.get(int(params["orderId"]))
            if order is not None and order.symbol == symbol:
                return order
        elif "origClientOrderId" in params:
            found = [
                o
                for o in self.state.orders.values()
                if o.client_order_id == params["origClientOrderId"] and o.symbol == symbol
            ]
            if found:
                return found[-1]
        else:
            raise BinanceError(
                400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!"
            )
        raise BinanceError(400, -2013, "Order does not exist.")

    async def _get_order(self, params: dict[str, str]) -> Any:
        return self._find_order(params).json()

    async def _cancel_order(self, params: dict[str, str]) -> Any:
        order = self._find_order(params)
        if order.status != "NEW":
            raise BinanceError(400, -2011, "Unknown order sent.")
        order.status = "CANCELED"
        return order.json()

    async def _open_orders(self, params: dict[str, str]) -> Any:
        return [
            o.json()
            for o in self.state.orders.values()
            if o.status == "NEW" and ("symbol" not in params or o.symbol == params["symbol"])
        ]

    async def _cancel_all(self, params: dict[str, str]) -> Any:
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    async def _new_algo(self, params: dict[str, str]) -> Any:
        symbol = self._symbol(params)
        if params.get("algoType") != "CONDITIONAL":
            raise BinanceError(400, -1116, "Invalid algoType.")
        order_type = params.get("type", "")
        if order_type not in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
            raise BinanceError(400, -1116, "Invalid orderType.")
        client_id = params.get("clientAlgoId") or f"algo_{next(self._ids)}"
        if any(a.client_algo_id == client_id and a.status == "NEW" for a in self.state.algo.values()):
            raise BinanceError(400, -20132, "The client algo id is duplicated.")
        trigger = Decimal(params.get("triggerPrice", "0"))
        tick = Decimal(SYMBOLS[symbol]["tick"])
        if trigger <= 0 or trigger % tick != 0:
            raise BinanceError(400, -4014, "Price not increased by tick size.")
        now = self.server_ms()
        algo = AlgoOrder(
            next(self._ids),
            client_id,
            symbol,
            params.get("side", "SELL"),
            order_type,
            Decimal(params.get("quantity", "0")),
            trigger,
            params.get("reduceOnly") == "true",
            "NEW",
            now,
            now,
        )
        if self._crossed(algo):
            raise BinanceError(400, -2021, "Order would immediately trigger.")
        self.state.algo[algo.algo_id] = algo
        return algo.json()

    def _find_algo(self, params: dict[str, str]) -> AlgoOrder:
        if "algoId" in params:
            algo = self.state.algo.get(int(params["algoId"]))
            if algo is not None:
                return algo
        elif "clientAlgoId" in params:
            found = [a for a in self.state.algo.values() if a.client_algo_id == params["clientAlgoId"]]
            if found:
                return found[-1]
        raise BinanceError(400, -2013, "Order does not exist.")

    async def _get_algo(self, params: dict[str, str]) -> Any:
        return self._find_algo(params).json()

    async def _cancel_algo(self, params: dict[str, str]) -> Any:
        algo = self._find_algo(params)
        if algo.status != "NEW":
            raise BinanceError(400, -2011, "Unknown order sent.")
        algo.status = "CANCELED"
        algo.update_time = self.server_ms()
        return {"algoId": algo.algo_id, "clientAlgoId": algo.client_algo_id, "code": "200", "msg": "success"}

    async def _open_algo(self, params: dict[str, str]) -> Any:
        return [
            a.json()
            for a in self.state.algo.values()
            if a.status == "NEW" and ("symbol" not in params or a.symbol == params["symbol"])
        ]

    async def _cancel_all_algo(self, params: dict[str, str]) -> Any:
        symbol = self._symbol(params)
        for algo in self.state.algo.values():
            if algo.symbol == symbol and algo.status == "NEW":
                algo.status = "CANCELED"
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    async def _user_trades(self, params: dict[str, str]) -> Any:
        symbol = self._symbol(params)
        rows = [t for t in self.state.trades if t["symbol"] == symbol]
        if "orderId" in params:
            rows = [t for t in rows if t["orderId"] == int(params["orderId"])]
        if "startTime" in params:
            rows = [t for t in rows if t["time"] >= int(params["startTime"])]
        if "fromId" in params:
            rows = [t for t in rows if t["id"] >= int(params["fromId"])]
        return rows[: int(params.get("limit", "500"))]

    async def _income(self, params: dict[str, str]) -> Any:
        rows = self.state.income
        if "incomeType" in params:
            rows = [r for r in rows if r["incomeType"] == params["incomeType"]]
        if "startTime" in params:
            rows = [r for r in rows if r["time"] >= int(params["startTime"])]
        return rows

    async def _position_risk(self, params: dict[str, str]) -> Any:
        rows = []
        for symbol in SYMBOLS:
            if "symbol" in params and params["symbol"] != symbol:
                continue
            position = self.state.positions.get(symbol, Position())
            mark = self.state.marks[symbol]
            rows.append(
                {
                    "symbol": symbol,
                    "positionAmt": str(position.amount),
                    "entryPrice": str(position.entry),
                    "breakEvenPrice": str(position.entry),
                    "markPrice": str(mark),
                    "unRealizedProfit": str((mark - position.entry) * position.amount if position.amount else 0),
                    "liquidationPrice": "0",
                    "leverage": str(self.state.leverage.get(symbol, 20)),
                    "maxNotionalValue": "50000000",
                    "marginType": self.state.margin_type.get(symbol, "cross"),
                    "isolatedMargin": str(position.margin),
                    "isAutoAddMargin": "false",
                    "positionSide": "BOTH",
                    "notional": str(mark * position.amount),
                    "isolatedWallet": str(position.margin),
                    "updateTime": position.update_time,
                }
            )
        return rows

    async def _balance(self, params: dict[str, str]) -> Any:
        return [
            {
                "accountAlias": "SgsR",
                "asset": "USDT",
                "balance": str(self.state.balance),
                "crossWalletBalance": str(self.state.balance),
                "crossUnPnl": "0",
                "availableBalance": str(self.state.balance),
                "maxWithdrawAmount": str(self.state.balance),
                "marginAvailable": True,
                "updateTime": self.server_ms(),
            }
        ]

    async def _set_leverage(self, params: dict[str, str]) -> Any:
        symbol = self._symbol(params)
        leverage = int(params.get("leverage", "0"))
        if not 1 <= leverage <= 125:
            raise BinanceError(400, -4028, "Leverage is not valid.")
        self.state.leverage[symbol] = leverage
        return {"leverage": leverage, "maxNotionalValue": "50000000", "symbol": symbol}

    async def _set_margin_type(self, params: dict[str, str]) -> Any:
        symbol = self._symbol(params)
        wanted = params.get("marginType", "").lower()
        if wanted == "crossed":
            wanted = "cross"
        if self.state.margin_type.get(symbol, "cross") == wanted:
            raise BinanceError(400, -4046, "No need to change margin type.")
        self.state.margin_type[symbol] = wanted
        return {"code": 200, "msg": "success"}

    async def _new_listen_key(self, params: dict[str, str]) -> Any:
        key = hashlib.sha256(str(next(self._ids)).encode()).hexdigest()
        self._listen_keys[key] = time.monotonic() + 3600
        return {"listenKey": key}

    async def _keep_listen_key(self, params: dict[str, str]) -> Any:
        for key in self._listen_keys:
            self._listen_keys[key] = time.monotonic() + 3600
        return {}

    async def _close_listen_key(self, params: dict[str, str]) -> Any:
        return {}

    async def _api_restrictions(self, params: dict[str, str]) -> Any:
        key = next(iter(self.state.keys.values()))
        return {
            "ipRestrict": key.ip_restrict,
            "createTime": 1698645219000,
            "enableReading": True,
            "enableWithdrawals": key.withdrawals,
            "enableInternalTransfer": False,
            "enableMargin": False,
            "enableFutures": key.can_trade,
            "permitsUniversalTransfer": False,
            "enableVanillaOptions": False,
            "enableFixApiTrade": False,
            "enableFixReadOnly": False,
            "enableSpotAndMarginTrading": False,
            "enablePortfolioMarginTrading": False,
        }

    # -- websockets ------------------------------------------------------------------------------

    async def _ws_user_or_stream(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        if key in self._listen_keys and self.user_stream_down:
            return web.Response(status=503, text="user-data stream unavailable")
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        if key in self._listen_keys:
            self._user_sockets.setdefault(key, []).append(ws)
        else:
            self._market_sockets.append((ws, {key}))
        await self._drain(ws)
        return ws

    async def _ws_combined(self, request: web.Request) -> web.StreamResponse:
        streams = set(request.query.get("streams", "").split("/"))
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        self._market_sockets.append((ws, streams))
        await self._drain(ws)
        return ws

    @staticmethod
    async def _drain(ws: web.WebSocketResponse) -> None:
        async for message in ws:
            if message.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break

    async def _user_event(self, payload: dict[str, Any]) -> None:
        for sockets in list(self._user_sockets.values()):
            for ws in list(sockets):
                if not ws.closed:
                    await ws.send_str(json.dumps(payload))

    async def _publish_mark(self, symbol: str) -> None:
        mark = str(self.state.marks[symbol])
        await self._publish(
            f"{symbol.lower()}@markPrice",
            {
                "e": "markPriceUpdate",
                "E": self.server_ms(),
                "s": symbol,
                "p": mark,
                "i": mark,
                "P": mark,
                "r": "0.00010000",
                "T": (self.server_ms() // 28_800_000 + 1) * 28_800_000,
            },
        )

    async def _publish(self, stream: str, payload: dict[str, Any]) -> None:
        for ws, streams in list(self._market_sockets):
            if ws.closed:
                continue
            if stream in streams or f"{stream}@1s" in streams:
                await ws.send_str(json.dumps({"stream": stream, "data": payload}))


def round_step(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(rounding=ROUND_DOWN) * step
