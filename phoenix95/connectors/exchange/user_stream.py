"""The user-data stream: a listen key (kept alive every ``keepalive_s``), a websocket on it, and what
its events mean for Phoenix95 - a protection order that fired (``ALGO_UPDATE``) cancels the other,
fills (``ORDER_TRADE_UPDATE``) are recorded with their fees, a funding payment (``ACCOUNT_UPDATE``
``FUNDING_FEE``, which carries no income id) makes it read the income history (recorded by tran id).
While the stream is down (dropped, listen key expired) the same is done by REST polling every
``poll_interval_s``; it reconnects with backoff."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from prometheus_client import Counter, Gauge

from phoenix95.connectors.exchange.binance import BinanceExchange
from phoenix95.settings import ExchangeSettings

logger = logging.getLogger(__name__)

STREAM_UP = Gauge("p95_exchange_user_stream_up", "1 while the user-data stream is connected")
STREAM_EVENTS = Counter("p95_exchange_user_stream_events_total", "User-data stream events", ["event"])

DEFAULT_WS = {"binance": "wss://fstream.binance.com", "binance-demo": "wss://fstream.binancefuture.com"}


def ws_base(settings: ExchangeSettings) -> str:
    if settings.ws_url:
        return settings.ws_url.rstrip("/")
    if settings.base_url:
        return settings.base_url.rstrip("/").replace("https://", "wss://").replace("http://", "ws://")
    return DEFAULT_WS.get(settings.kind, DEFAULT_WS["binance"])


class UserStream:
    def __init__(self, exchange: BinanceExchange, settings: ExchangeSettings, *, keepalive_s: float = 1800.0):
        self.exchange = exchange
        self.settings = settings
        self.keepalive_s = keepalive_s
        self.connected = asyncio.Event()
        self.reconnects = 0
        self.events = 0
        self.polls = 0

    async def run(self) -> None:
        backoff = 0.5
        while True:
            started = time.monotonic()
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                logger.warning("exchange: user-data stream down (%s); polling by REST", error)
            STREAM_UP.set(0)
            self.connected.clear()
            self.reconnects += 1
            if time.monotonic() - started > 30:
                backoff = 0.5
            await self._poll_for(backoff)
            backoff = min(backoff * 2, 30.0)

    async def _poll_for(self, seconds: float) -> None:
        """Poll once now (what the stream would have told us), then wait."""
        try:
            self.polls += 1
            await self.exchange.check_protection()
            await self.exchange.sync_funding()
        except Exception as error:
            logger.warning("exchange: polling failed: %s", error)
        await asyncio.sleep(seconds)

    async def _session(self) -> None:
        import aiohttp

        answer = await self.exchange.rest.call("fapiPrivatePostListenKey", {})
        key = answer.get("listenKey") if isinstance(answer, dict) else None
        if not key:
            raise RuntimeError("no listen key in the answer")
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{ws_base(self.settings)}/ws/{key}", heartbeat=30) as ws,
        ):
            STREAM_UP.set(1)
            self.connected.set()
            logger.info("exchange: user-data stream connected")
            await self.exchange.check_protection()  # what happened while it was down
            keepalive = asyncio.create_task(self._keepalive())
            poller = asyncio.create_task(self._slow_poll())
            try:
                async for message in ws:
                    if message.type == aiohttp.WSMsgType.TEXT:
                        await self.handle(json.loads(message.data))
                    elif message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        break
            finally:
                keepalive.cancel()
                poller.cancel()
        raise RuntimeError("stream closed")

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive_s)
            try:
                await self.exchange.rest.call("fapiPrivatePutListenKey", {})
            except Exception as error:
                logger.warning("exchange: listen key keep-alive failed: %s", error)

    async def _slow_poll(self) -> None:
        """Even with the stream up, check protection now and then (an event can be missed)."""
        while True:
            await asyncio.sleep(max(self.settings.poll_interval_s * 12, 30))
            try:
                await self.exchange.check_protection()
                await self.exchange.sync_funding()
            except Exception as error:
                logger.warning("exchange: protection check failed: %s", error)

    async def handle(self, event: dict[str, Any]) -> None:
        kind = str(event.get("e", ""))
        self.events += 1
        STREAM_EVENTS.labels(kind or "unknown").inc()
        if kind == "ALGO_UPDATE":
            order = event.get("o") or {}
            client_id = str(order.get("caid", ""))
            if client_id.startswith("p95-"):
                done = await self.exchange.on_protection_update(
                    client_id, str(order.get("X", "")), str(order.get("ai") or "")
                )
                for line in done:
                    logger.info("exchange: %s", line)
        elif kind == "ORDER_TRADE_UPDATE":
            order = event.get("o") or {}
            if order.get("x") == "TRADE":
                trade = {
                    "symbol": order.get("s"),
                    "id": order.get("t"),
                    "orderId": order.get("i"),
                    "clientOrderId": order.get("c"),
                    "side": order.get("S"),
                    "price": order.get("L"),
                    "qty": order.get("l"),
                    "commission": order.get("n", "0"),
                    "commissionAsset": order.get("N", "USDT"),
                    "realizedPnl": order.get("rp", "0"),
                    "time": order.get("T"),
                }
                await self.exchange.record_fills([trade], adopted=False)
        elif kind == "ACCOUNT_UPDATE" and (event.get("a") or {}).get("m") == "FUNDING_FEE":
            await self.exchange.sync_funding()  # the event has no income id: read it from the history
        elif kind == "listenKeyExpired":
            raise RuntimeError("listen key expired")
