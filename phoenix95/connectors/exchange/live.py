"""The live exchange as the execution stage runs it: the Binance connector plus what runs beside it.

On start (before the stage's first batch, so before any order): the keys are checked (one clear line
when wrong), the clock is synced, and reconciliation runs with ``act`` - unresolved differences
leave trading HALTED. While running: the user-data stream (listen key kept alive; REST polling when
the stream is down) settles protection that fired, and reconciliation runs every
``reconcile_interval_s``, publishing its differences as ControlEvents.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from typing import Any

from phoenix95.connectors.exchange.base import ExchangeOrder, OrderRequest
from phoenix95.connectors.exchange.binance import BinanceExchange
from phoenix95.connectors.exchange.binance_rest import BinanceRest
from phoenix95.connectors.exchange.intents import IntentStore
from phoenix95.connectors.exchange.reconcile import Reconciler, Report
from phoenix95.connectors.exchange.user_stream import UserStream
from phoenix95.domain import ids
from phoenix95.domain.trading_state import TradingState
from phoenix95.schemas.envelope import utc_now
from phoenix95.schemas.messages import ControlEvent
from phoenix95.settings import Settings
from phoenix95.storage import queries
from phoenix95.storage.postgres import Database

logger = logging.getLogger(__name__)


class ExchangeStartError(RuntimeError):
    """The exchange cannot be used (keys, permissions, connectivity): one line for the user."""


class LiveExchange:
    """`ExchangeConnector` for Binance, with start/stop for the execution stage."""

    def __init__(self, settings: Settings, database: Database, *, symbols: Sequence[str] = (), publisher: Any = None):
        self.settings = settings
        self.database = database
        self.rest = BinanceRest(settings.exchange, on_halt=self._halt)
        self.exchange = BinanceExchange(self.rest, IntentStore(database), settings.exchange, events=self.publish)
        self.name: str = self.exchange.name
        self.reconciler = Reconciler(self.exchange, database, symbols=list(symbols))
        self.stream = UserStream(self.exchange, settings.exchange)
        self._tasks: list[asyncio.Task[Any]] = []
        #: Produces ControlEvents (`publish(events)`, optional `stop()`); None: logged only.
        self._producer: Any = publisher
        self.last_report: Report | None = None

    # -- the port --------------------------------------------------------------------------------

    async def query(self, client_order_ids: Sequence[str]) -> dict[str, ExchangeOrder]:
        return await self.exchange.query(client_order_ids)

    async def submit(self, requests: Sequence[OrderRequest]) -> dict[str, ExchangeOrder]:
        return await self.exchange.submit(requests)

    async def cancel(self, client_order_id: str) -> ExchangeOrder | None:
        return await self.exchange.cancel(client_order_id)

    async def cancel_all(self, symbol: str) -> int:
        return await self.exchange.cancel_all(symbol)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> Report:
        from phoenix95.connectors.exchange.check import check_account

        check = await check_account(self.exchange)
        if check.fatal:
            raise ExchangeStartError(check.fatal)
        for warning in check.warnings:
            logger.warning("exchange: %s", warning)
        report = await self.reconcile(trigger="start", act=True)
        if report.halted:
            logger.error("exchange: trading HALTED by the start reconciliation: %s", report.summary())
        self._tasks.append(asyncio.create_task(self.stream.run(), name="exchange-user-stream"))
        if self.settings.exchange.reconcile_interval_s > 0:
            self._tasks.append(asyncio.create_task(self._reconcile_every(), name="exchange-reconcile"))
        return report

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self.rest.close()
        stop = getattr(self._producer, "stop", None)
        if stop is not None:
            await stop()

    async def reconcile(self, *, trigger: str, act: bool) -> Report:
        report = await self.reconciler.run(trigger=trigger, act=act, halt=True)
        self.last_report = report
        if report.differences or report.error or trigger == "start":
            severity = "critical" if report.halted else ("warning" if report.differences else "info")
            await self.publish(
                "reconciliation",
                severity,
                self.name,
                report.summary(),
                {"trigger": trigger, "halted": report.halted, "differences": report.as_dict()["differences"][:50]},
            )
        return report

    async def _reconcile_every(self) -> None:
        while True:
            await asyncio.sleep(self.settings.exchange.reconcile_interval_s)
            try:
                await self.reconcile(trigger="periodic", act=False)
            except Exception:
                logger.exception("exchange: periodic reconciliation failed")

    # -- halts and events ------------------------------------------------------------------------

    async def _halt(self, reason: str) -> None:
        await queries.set_trading_state(self.database, TradingState.HALTED, reason=reason[:500], actor="exchange")
        await self.publish("exchange", "critical", self.name, reason, {"state": "HALTED"})

    async def publish(self, kind: str, severity: str, subject: str, message: str, details: dict[str, Any]) -> None:
        event = control_event(kind, severity, subject, message, details, actor=f"exchange:{self.name}")
        if self._producer is None:
            logger.warning("exchange: %s (%s): %s", kind, severity, message)
            return
        try:
            await asyncio.wait_for(self._producer.publish([event]), timeout=10)
        except Exception as error:  # the event is also in the log and (reconciliation) in PostgreSQL
            logger.warning("exchange: control event not published (%s): %s", error, message)


def control_event(
    kind: str, severity: str, subject: str, message: str, details: dict[str, Any], *, actor: str
) -> ControlEvent:
    text = json.dumps(details, sort_keys=True, default=str)
    event_id = ids.derive("control", kind, subject, message, text)
    now = utc_now()
    return ControlEvent(
        event_id=event_id,
        correlation_id=event_id,
        causation_id=None,
        ts_event=now,
        ts_ingest=now,
        schema_version=ControlEvent.SCHEMA_VERSION,
        producer="exchange",
        kind=kind,
        severity=severity,  # type: ignore[arg-type]
        actor=actor,
        subject=subject[:100],
        state="HALTED" if severity == "critical" else None,
        reason=kind,
        message=message[:1000],
        details=text,
    )
