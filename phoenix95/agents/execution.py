"""Execution stage: p95.risk.verdicts (+ p95.market.prices) -> market order on the exchange connector
-> p95.orders (and the orders/trades rows).

An approved verdict becomes a market order filled at the *next* market price for its symbol: the
first price event at or after the decision time. If that price has not arrived yet the verdict is
held (un-acked, its offset not committed) until it does, or until the feed has been quiet for
`quiet_fill_after` seconds, when the last known price is used. The trading state is checked again
here: a verdict approved before a halt does not become an order after it.

The stage reads every price but fills with few of them: of each price it reads only the symbol and
event time (`Codec.peek`) and keeps the rest undecoded (`domain/lazy_prices.py`); a price is decoded
when an order is filled at it, or when it is the one that releases a held verdict. The fills are those
of decoding every price on arrival.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from phoenix95.agents.base import Stage, record_key
from phoenix95.agents.ports import ExchangeConnector, ExecutionState, InputRecord, OrderPlaced, OrderRequest, Outcome
from phoenix95.domain import ids
from phoenix95.domain.execution import MarketTick, OrderRejectReason
from phoenix95.domain.lazy_prices import LazyPriceHistory, micros
from phoenix95.domain.trading_state import TradingState
from phoenix95.domain.values import entry_order_side
from phoenix95.schemas import topics
from phoenix95.schemas.codec import Codec, DecodeError
from phoenix95.schemas.convert import dead_letter, order_message, tick_of
from phoenix95.schemas.messages import MarketPrice, RiskVerdict
from phoenix95.streams.stages import EXECUTION

logger = logging.getLogger(__name__)
#: What the stage reads of every price (the rest is decoded only for a price it fills at).
_PRICE_HEAD = ("symbol", "ts_event")


@dataclass
class _Pending:
    record: InputRecord
    verdict: RiskVerdict
    since: float


class ExecutionStage(Stage):
    name = EXECUTION.name
    inputs = EXECUTION.inputs

    def __init__(
        self,
        codec: Codec,
        exchange: ExchangeConnector,
        state: ExecutionState,
        *,
        quiet_fill_after: float = 2.0,
        price_history: int = 5000,
        prices_topic: str = topics.MARKET_PRICES,
        monotonic: object = time.monotonic,
    ):
        self.codec = codec
        self.exchange = exchange
        self.state = state
        self.quiet_fill_after = quiet_fill_after
        self.price_history = price_history
        self.prices_topic = prices_topic
        self.prices: dict[str, LazyPriceHistory[bytes]] = {}
        self.pending: dict[tuple[str, int, int], _Pending] = {}
        self._monotonic = monotonic

    async def start(self) -> None:
        """A live exchange connects and reconciles here, before the first verdict becomes an order."""
        starter = getattr(self.exchange, "start", None)
        if starter is not None:
            await starter()

    async def stop(self) -> None:
        stopper = getattr(self.exchange, "stop", None)
        if stopper is not None:
            await stopper()

    def reset(self) -> None:
        self.prices.clear()
        self.pending.clear()

    async def recover(self) -> None:
        """Nothing of this stage's memory is in the stores, and it is kept consistent: keep it."""

    def observe(self, tick: MarketTick) -> None:
        self._history(tick.symbol).append(micros(tick.time), tick)

    def _history(self, symbol: str) -> LazyPriceHistory[bytes]:
        history = self.prices.get(symbol)
        if history is None:
            history = self.prices[symbol] = LazyPriceHistory(self._decode_price, self.price_history)
        return history

    def _decode_price(self, value: bytes) -> MarketTick | None:
        """The tick of a price message; None for one that does not decode (the positions stage
        dead-letters it; here it is as if it had not been read)."""
        try:
            return tick_of(self.codec.decode(value, MarketPrice))
        except DecodeError:
            return None

    def fill_tick(self, verdict: RiskVerdict) -> MarketTick | None:
        history = self.prices.get(verdict.symbol)
        if history is None:
            return None
        tick = history.at_or_after(micros(verdict.ts_event))
        if tick is None:
            return None
        if history.trimmed and tick.time > verdict.ts_event and tick is history.first():
            logger.warning(
                "execution: price history of %s too short to find the price after %s", verdict.symbol, verdict.ts_event
            )
        return tick

    async def process(self, records: Sequence[InputRecord]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        ready: list[tuple[InputRecord, RiskVerdict, MarketTick | None]] = []
        released: set[tuple[str, int, int]] = set()
        verdicts: list[tuple[InputRecord, RiskVerdict]] = []
        # the held verdicts by symbol, in the order they were held, with their decision time
        held: dict[str, list[tuple[tuple[str, int, int], _Pending, int]]] = {}
        for key, pending in self.pending.items():
            held.setdefault(pending.verdict.symbol, []).append((key, pending, micros(pending.verdict.ts_event)))
        for record in records:
            if record.topic.endswith(self.prices_topic):
                outcomes.append(Outcome(record))
                try:
                    head = self.codec.peek(record.value, MarketPrice, _PRICE_HEAD)
                except DecodeError:
                    continue  # dead-lettered by the positions stage
                symbol, time = head["symbol"], head["ts_event"]
                due = [
                    (key, pending)
                    for key, pending, decided in held.get(symbol, ())
                    if key not in released and time >= decided
                ]
                if not due:
                    self._history(symbol).append(time, record.value)
                    continue
                tick = self._decode_price(record.value)  # it releases held verdicts: only a valid price does
                if tick is None:
                    continue
                self.observe(tick)
                for key, pending in due:
                    released.add(key)
                    ready.append((pending.record, pending.verdict, self.fill_tick(pending.verdict)))
                continue
            try:
                verdict = self.codec.decode(record.value, RiskVerdict)
            except DecodeError as error:
                outcomes.append(
                    Outcome(record, dead_letter=dead_letter(self.name, record, error.reason, error.message))
                )
                continue
            if not verdict.approved:
                outcomes.append(Outcome(record))  # nothing to execute
                continue
            verdicts.append((record, verdict))
        stored = await self.state.orders([v.verdict_id for _, v in verdicts]) if verdicts else {}
        waiting: list[tuple[tuple[str, int, int], _Pending]] = []
        for record, verdict in verdicts:
            order = stored.get(verdict.verdict_id)
            if order is not None:
                outcomes.append(Outcome(record, produce=[order]))  # re-delivery: the same order again
                continue
            next_tick = self.fill_tick(verdict)
            if next_tick is None:
                waiting.append((record_key(record), _Pending(record, verdict, self._now())))
            else:
                ready.append((record, verdict, next_tick))
        if ready:
            outcomes.extend(await self.execute(ready))
        # Only now that the orders exist does the pending set change (an exception above leaves it intact).
        for key in released:
            self.pending.pop(key, None)
        self.pending.update(waiting)
        return outcomes

    async def on_clock(self, now: datetime) -> list[Outcome]:
        due = [key for key, p in self.pending.items() if self._now() - p.since >= self.quiet_fill_after]
        if not due:
            return []
        ready = []
        for key in due:
            pending = self.pending[key]
            history = self.prices.get(pending.verdict.symbol)
            ready.append((pending.record, pending.verdict, history.last() if history is not None else None))
        outcomes = await self.execute(ready)
        for key in due:
            self.pending.pop(key, None)
        return outcomes

    def _now(self) -> float:
        return self._monotonic()  # type: ignore[operator]

    async def execute(self, ready: Sequence[tuple[InputRecord, RiskVerdict, MarketTick | None]]) -> list[Outcome]:
        async with self._submission() as state:
            return await self._execute(ready, state)

    @contextlib.asynccontextmanager
    async def _submission(self) -> AsyncIterator[TradingState]:
        """The trading state, held from the decision to submit until the exchange answered: a halt
        waits for a submission in flight and every later one sees it (ExecutionState.submission)."""
        guard = getattr(self.state, "submission", None)
        if guard is None:
            yield await self.state.trading_state()
            return
        async with guard() as state:
            yield state

    async def _execute(
        self, ready: Sequence[tuple[InputRecord, RiskVerdict, MarketTick | None]], state: TradingState
    ) -> list[Outcome]:
        closing = [v.close_position_id for _, v, _ in ready if v.intent == "close" and v.close_position_id]
        open_quantity = await self.state.open_quantity(closing) if closing else {}
        entries = await self.state.entry_orders(closing) if closing else {}
        client_ids = {v.verdict_id: ids.client_order_id(ids.order_id(v.verdict_id)) for _, v, _ in ready}
        known = await self.exchange.query(list(client_ids.values()))
        requests: list[OrderRequest] = []
        rejected: dict[str, OrderRejectReason] = {}
        quantities: dict[str, Decimal] = {}
        for _, verdict, tick in ready:
            client_id = client_ids[verdict.verdict_id]
            quantity = self._quantity(verdict, open_quantity)
            quantities[verdict.verdict_id] = quantity or Decimal(0)
            if client_id in known:
                continue  # the exchange has it already (we crashed after submitting): never submit twice
            reason = self._reject_reason(verdict, state, tick, quantity)
            if reason is not None:
                rejected[verdict.verdict_id] = reason
                continue
            assert tick is not None and quantity is not None
            side = entry_order_side(verdict.side)  # a short signal sells: it opens a short or closes a long
            requests.append(
                OrderRequest(
                    client_order_id=client_id,
                    symbol=verdict.symbol,
                    side=side,
                    quantity=quantity,
                    reduce_only=verdict.intent == "close",
                    reference_price=tick.price,
                    time=max(tick.time, verdict.ts_event),
                    volume=tick.volume,
                    price_event_id=tick.event_id,
                    leverage=verdict.plan.leverage if verdict.plan is not None else None,
                    margin_mode=verdict.plan.margin_mode if verdict.plan is not None else None,
                    stop_loss=verdict.plan.stop_loss_price if verdict.plan is not None else None,
                    take_profit=verdict.plan.take_profit_price if verdict.plan is not None else None,
                    planned_entry=verdict.plan.entry_price if verdict.plan is not None else None,
                    closes_entry=_entry_client_id(entries, verdict.close_position_id),
                )
            )
        placed = dict(known)
        if requests:
            placed.update(await self.exchange.submit(requests))
        outcomes = []
        for record, verdict, _ in ready:
            client_id = client_ids[verdict.verdict_id]
            exchange_order = placed.get(client_id)
            reason = rejected.get(verdict.verdict_id)
            if exchange_order is None and reason is None:
                reason = OrderRejectReason.EXCHANGE_DID_NOT_ACCEPT
            elif exchange_order is not None and exchange_order.status != "FILLED" and reason is None:
                reason = _exchange_reason(exchange_order.reason)
            order = order_message(
                verdict, client_id, exchange_order, reason, quantities[verdict.verdict_id], self.exchange.name
            )
            outcomes.append(Outcome(record, produce=[order], persist=[OrderPlaced(order, verdict)]))
        return outcomes

    @staticmethod
    def _quantity(verdict: RiskVerdict, open_quantity: dict[str, Decimal]) -> Decimal | None:
        if verdict.intent == "close":
            return open_quantity.get(verdict.close_position_id or "")
        return verdict.plan.quantity if verdict.plan is not None else None

    @staticmethod
    def _reject_reason(
        verdict: RiskVerdict, state: TradingState, tick: MarketTick | None, quantity: Decimal | None
    ) -> OrderRejectReason | None:
        if not state.allows(reduces_position=verdict.intent == "close") and not is_kill_switch_close(verdict):
            return (
                OrderRejectReason.TRADING_HALTED if state is TradingState.HALTED else OrderRejectReason.TRADING_REDUCING
            )
        if tick is None:
            return OrderRejectReason.NO_MARKET_DATA
        if quantity is None or quantity <= 0:
            return OrderRejectReason.POSITION_NOT_OPEN if verdict.intent == "close" else OrderRejectReason.NO_QUANTITY
        return None


def is_kill_switch_close(verdict: RiskVerdict) -> bool:
    """A close `p95 halt --flatten` issued, or the positions stage for a live position held to its
    expiry: it passes a HALT (it can only close a position)."""
    if verdict.intent != "close" or verdict.close_position_id is None:
        return False
    position_id = verdict.close_position_id
    return (
        verdict.verdict_id == ids.kill_switch_verdict_id(position_id)
        or ids.expiry_attempt(verdict.verdict_id, position_id) is not None
    )


def _entry_client_id(entries: dict[str, str], position_id: str | None) -> str | None:
    order_id = entries.get(position_id or "")
    return ids.client_order_id(order_id) if order_id else None


def _exchange_reason(text: str | None) -> OrderRejectReason:
    """A live connector's reason for an order it did not fill."""
    try:
        return OrderRejectReason(text or "EXCHANGE_REJECTED")
    except ValueError:
        return OrderRejectReason.EXCHANGE_REJECTED
