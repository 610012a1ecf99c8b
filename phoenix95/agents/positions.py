"""Position stage: p95.orders + p95.market.prices -> positions opened, marked to market, funded and
closed -> p95.positions.ticks (and the positions/trades rows, Redis hot state, time series).

Open positions live in memory and are recovered from PostgreSQL at start. Prices are kept per symbol
so a fill that arrives after later prices (it travelled through three stages) is caught up in event
order: a stop-loss hit while the order was in flight is not missed. The stage owns the prices topic:
it dead-letters undecodable price messages and writes the price cache and price series.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from phoenix95.agents.base import Stage
from phoenix95.agents.ports import (
    CLOCK_RECORD,
    ExchangeCloseFill,
    ExchangeFundingApplied,
    ExchangeLedger,
    Fact,
    InputRecord,
    Outcome,
    PositionChanged,
    PositionStore,
    PriceObserved,
    VerdictMade,
)
from phoenix95.domain import ids
from phoenix95.domain.brackets import BracketTable
from phoenix95.domain.config import TradingConfig
from phoenix95.domain.execution import Fill, MarketTick, PriceHistory, prices_after
from phoenix95.domain.funding import FundingSchedule
from phoenix95.domain.positions import (
    Position,
    Update,
    apply_funding,
    close_by_order,
    expiry_due,
    on_clock,
    on_price,
    open_position,
)
from phoenix95.domain.positions import (
    PositionEvent as DomainEvent,
)
from phoenix95.domain.price_batch import BatchPrices
from phoenix95.domain.values import ZERO, exit_order_side, money
from phoenix95.schemas import topics
from phoenix95.schemas.codec import Codec, DecodeError
from phoenix95.schemas.convert import close_verdict, dead_letter, fill_of, position_message, tick_of
from phoenix95.schemas.envelope import Event
from phoenix95.schemas.messages import MarketPrice, Order
from phoenix95.streams.ownership import SymbolOwnership
from phoenix95.streams.stages import POSITIONS

logger = logging.getLogger(__name__)


class PositionStage(Stage):
    name = POSITIONS.name
    inputs = POSITIONS.inputs
    #: Its events come from in-memory state that the rows already hold once written: a re-delivered
    #: fill finds its position open and produces nothing, a re-delivered price finds the position
    #: past it. So the events go through the outbox, written with the rows.
    uses_outbox = True

    def __init__(
        self,
        codec: Codec,
        config: TradingConfig,
        brackets: BracketTable,
        store: PositionStore,
        *,
        funding: FundingSchedule | None = None,
        clock: Literal["wall", "event"] = "wall",
        price_history: int = 5000,
        prices_topic: str = topics.MARKET_PRICES,
        mark_interval: timedelta = timedelta(0),
        ownership: SymbolOwnership | None = None,
        ledger: ExchangeLedger | None = None,
        expiry_retry_after: float = 30.0,
        late_funding_every: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.codec = codec
        self.config = config
        self.brackets = brackets
        self.store = store
        self.funding = funding or FundingSchedule(config.default_funding_rate)
        self.clock = clock
        self.price_history = price_history
        self.prices_topic = prices_topic
        self.open: dict[str, Position] = {}
        #: `open` by symbol, in the same order (rebuilt at each batch, kept by `_apply` within it).
        self._by_symbol: dict[str, dict[str, Position]] = {}
        self.prices: dict[str, PriceHistory] = {}
        self.realized = Decimal(0)
        self.mark_interval = mark_interval
        #: Event time of each open position's last published tick.
        self.last_mark: dict[str, datetime] = {}
        self._unpublished: dict[str, tuple[Position, DomainEvent, str, Decimal, list[Fact]]] = {}
        #: The symbols this instance owns (several instances in one group): only their open
        #: positions are held, marked, expired and funded here; None: every symbol.
        self.ownership = ownership
        #: A live exchange (None on paper): it holds the stop-loss and take-profit, liquidates and
        #: charges funding; its protection fills close positions and its funding payments are applied
        #: (read from the ledger on every clock tick) instead of the paper model's.
        self.ledger = ledger
        #: Positions closed at the exchange whose close waits for a commission's USDT figure (warned once).
        self._fee_waits: set[str] = set()
        self.exchange_settles = ledger is not None
        #: Funding payments applied but perhaps not written yet (the ledger's query excludes written ones).
        self._funding_seen: set[int] = set()
        #: A live position held to its expiry is closed by an order (see `_close_expired`): the attempt
        #: issued per position, and the attempt due (and from when) after the exchange refused one.
        self._expiry_issued: dict[str, int] = {}
        self._expiry_retry: dict[str, tuple[int, float]] = {}
        self.expiry_retry_after = expiry_retry_after
        self._monotonic = monotonic
        #: With no position open, funding reported after a close is looked for at this pace.
        self.late_funding_every = late_funding_every
        self._next_late_funding = 0.0

    def reset(self) -> None:
        self._expiry_issued.clear()
        self._expiry_retry.clear()
        self.last_mark.clear()
        self._unpublished.clear()
        self.open.clear()
        self.prices.clear()
        self.realized = Decimal(0)

    async def start(self) -> None:
        self.open.clear()
        for position in await self.store.open_positions():
            if self.ownership is None or self.ownership.owns(position.symbol):
                self.open[position.position_id] = position
        self.realized = await self.store.realized_pnl()
        logger.info("positions: recovered %d open positions, realized PnL %s", len(self.open), self.realized)

    @property
    def equity(self) -> Decimal:
        return self.config.starting_equity + self.realized

    async def _refresh_shared_account(self) -> None:
        """With the symbols shared among instances, the others close positions too: take the
        account's realized PnL (the `paper_account` row, kept by a trigger) from PostgreSQL, so the
        equity in this instance's events is the account's, not this instance's share of it."""
        ownership = self.ownership
        if ownership is not None and ownership.assigned is not None and len(ownership.assigned) < ownership.partitions:
            self.realized = await self.store.realized_pnl()

    async def process(self, records: Sequence[InputRecord]) -> list[Outcome]:
        await self._refresh_shared_account()
        self._by_symbol = {}
        for position in self.open.values():
            self._by_symbol.setdefault(position.symbol, {})[position.position_id] = position
        decoded: list[tuple[InputRecord, MarketPrice | Order | None, Outcome | None]] = []
        new_positions: list[str] = []
        for record in records:
            is_price = record.topic.endswith(self.prices_topic)
            try:
                item: MarketPrice | Order = (
                    self.codec.decode(record.value, MarketPrice) if is_price else self.codec.decode(record.value, Order)
                )
            except DecodeError as error:
                decoded.append(
                    (
                        record,
                        None,
                        Outcome(record, dead_letter=dead_letter(self.name, record, error.reason, error.message)),
                    )
                )
                continue
            if isinstance(item, Order) and item.status == "filled" and item.intent == "open":
                new_positions.append(ids.position_id(item.order_id))
            decoded.append((record, item, None))
        known = await self.store.positions([p for p in new_positions if p not in self.open]) if new_positions else {}
        ticks = [
            tick_of(item) if isinstance(item, MarketPrice) else item.symbol if isinstance(item, Order) else None
            for _, item, _ in decoded
        ]
        batch = BatchPrices.of(ticks, self.mark_interval)
        outcomes: list[Outcome] = []
        for index, (record, decoded_item, ready) in enumerate(decoded):
            if ready is not None:
                outcomes.append(ready)
            elif isinstance(decoded_item, MarketPrice):
                tick = ticks[index]
                assert isinstance(tick, MarketTick)
                outcomes.append(self._on_price(record, decoded_item, tick, batch, index))
            elif isinstance(decoded_item, Order):
                outcomes.append(self._on_order(record, decoded_item, known))
        self._flush()
        return outcomes

    async def on_clock(self, now: datetime) -> list[Outcome]:
        """Monitoring tick (wall clock): at least one tick per interval per open position."""
        if self.open:
            await self._refresh_shared_account()
        facts: list[Fact] = []
        produce: list[Event] = []
        if self.ledger is not None and (self.open or self._monotonic() >= self._next_late_funding):
            await self._settle_from_exchange(self.ledger, facts, produce, now)
        for position in list(self.open.values()):
            config = self.config.for_symbol(position.symbol)
            update = on_clock(
                position,
                now,
                config=config,
                tick_size=config.rules(position.symbol).tick_size,
                funding_rate=self.funding,
                exchange_settles=self.exchange_settles,
            )
            self._apply(update, "clock:" + now.isoformat(), facts, produce)
        if self.exchange_settles:
            for position in list(self.open.values()):
                self._close_expired(position, now, facts, produce)
        self._flush()
        if not produce and not facts:
            return []
        return [Outcome(CLOCK_RECORD, produce=produce, persist=facts)]

    def _on_price(
        self, record: InputRecord, price: MarketPrice, tick: MarketTick, batch: BatchPrices, index: int
    ) -> Outcome:
        if price.funding_rate is not None:
            self.funding.add(price.symbol, [(price.ts_event, price.funding_rate)])
        history = self.prices.get(price.symbol)
        if history is None:
            history = self.prices[price.symbol] = PriceHistory(self.price_history)
        history.append(tick)
        facts: list = [PriceObserved(price)]
        produce: list = []
        held = self._by_symbol.get(price.symbol)
        if not held:
            return Outcome(record, produce=produce, persist=facts)
        config = self.config.for_symbol(price.symbol)
        tick_size = config.rules(price.symbol).tick_size
        # what the batch leaves out, a later price of it overwrites (domain/price_batch.py); what it
        # applies includes, for a position it passed by, the highest and lowest marks it kept
        for position_id, applied in batch.to_apply(list(held.values()), index, tick, self.last_mark):
            position = held.get(position_id)
            if position is None:
                continue
            update = on_price(
                position,
                applied,
                config=config,
                tick_size=tick_size,
                funding_rate=self.funding,
                exchange_settles=self.exchange_settles,
            )
            if update.position.is_open and update.events and update.events[-1].kind == "tick":
                batch.marked(position_id, applied)
            self._apply(update, price.event_id if applied is tick else str(applied.event_id), facts, produce)
            if self.exchange_settles:
                self._close_expired(update.position, applied.time, facts, produce)
        return Outcome(record, produce=produce, persist=facts)

    def _on_order(self, record: InputRecord, order: Order, known: dict[str, Position]) -> Outcome:
        if order.status != "filled" or order.fill is None:
            if order.intent == "close":
                self._expiry_close_refused(order)
            return Outcome(record)
        facts: list = []
        produce: list = []
        config = self.config.for_symbol(order.symbol)
        tick_size = config.rules(order.symbol).tick_size
        if order.intent == "close":
            position = self.open.get(order.close_position_id or "")
            if position is None:
                logger.info(
                    "positions: close order %s for a position that is not open (already closed?)", order.order_id
                )
                return Outcome(record)
            manual = order.verdict_id == ids.kill_switch_verdict_id(position.position_id)
            expiry = ids.expiry_attempt(order.verdict_id, position.position_id) is not None
            update = close_by_order(
                position,
                fill=fill_of(order),
                config=config,
                funding_rate=self.funding,
                cause_id=order.order_id,
                reason="manual" if manual else "expiry" if expiry else "reduce_signal",
                exchange_settles=self.exchange_settles,
            )
            self._apply(update, order.order_id, facts, produce)
            return Outcome(record, produce=produce, persist=facts)
        position_id = ids.position_id(order.order_id)
        if position_id in self.open or position_id in known:
            return Outcome(record)  # re-delivered order: the position exists already
        fill = fill_of(order)
        update = open_position(
            position_id=position_id,
            order_id=order.order_id,
            signal_id=order.signal_id,
            symbol=order.symbol,
            side=order.position_side,
            fill=fill,
            leverage=order.leverage,
            margin_mode=order.margin_mode,
            brackets=self.brackets.for_symbol(order.symbol),
            config=config,
            tick_size=tick_size,
        )
        self._apply(update, order.order_id, facts, produce)
        # Catch up with the prices that arrived before the fill did.
        opened = self.open.get(position_id)
        later = prices_after(self.prices.get(order.symbol, ()), opened.last_event_time) if opened else []
        for tick in later:
            position = self.open.get(position_id)
            if position is None:
                break
            if tick.time > position.last_event_time:
                self._apply(
                    on_price(
                        position,
                        tick,
                        config=config,
                        tick_size=tick_size,
                        funding_rate=self.funding,
                        exchange_settles=self.exchange_settles,
                    ),
                    tick.event_id,
                    facts,
                    produce,
                )
        return Outcome(record, produce=produce, persist=facts)

    def _close_expired(self, position: Position, now: datetime, facts: list, produce: list) -> None:
        """A live position held to its expiry: the exchange must close it, so a reduce-only close goes
        to the execution stage as an approved close verdict (as `p95 halt --flatten` sends one). Its id
        is derived from the position and the attempt: issued again (a restart, a re-delivery) it is the
        same order, never a second close. The position closes, reason `expiry`, when the close order's
        fill comes back with the exchange's price and fee; its protection is cancelled by the connector."""
        if not expiry_due(position, now):
            return
        position_id = position.position_id
        retry = self._expiry_retry.get(position_id)
        if retry is not None:
            attempt, not_before = retry
            if self._monotonic() < not_before:
                return
            del self._expiry_retry[position_id]
        elif position_id in self._expiry_issued:
            return  # issued: its order is on its way
        else:
            attempt = 0
        self._expiry_issued[position_id] = attempt
        verdict = close_verdict(
            position,
            verdict_id=ids.expiry_verdict_id(position_id, attempt),
            producer=self.name,
            detail=f"EXPIRY: held to {position.auto_close_at.isoformat()}; close attempt {attempt + 1}",
            trading_state="ACTIVE",
            at=now,
        )
        logger.info(
            "positions: %s expired at %s: close order issued (attempt %d)", position_id, position.auto_close_at, attempt
        )
        produce.append(verdict)
        facts.append(VerdictMade(verdict))

    def _expiry_close_refused(self, order: Order) -> None:
        """An expiry close the execution stage did not fill: after a definite refusal another attempt
        (a new id) follows in `expiry_retry_after` seconds. An order whose fate is unknown is never
        followed by another: reconciliation settles it (a second close could double it)."""
        position_id = order.close_position_id or ""
        attempt = ids.expiry_attempt(order.verdict_id, position_id)
        if attempt is None or position_id not in self.open or attempt != self._expiry_issued.get(position_id, attempt):
            return
        self._expiry_issued[position_id] = attempt
        if order.reject_reason in _NOT_RETRIED or attempt + 1 >= ids.EXPIRY_ATTEMPTS:
            logger.error(
                "positions: the expiry close of %s was not filled (%s, attempt %d): not sent again",
                position_id,
                order.reject_reason,
                attempt + 1,
            )
            return
        logger.warning(
            "positions: the expiry close of %s was refused (%s): attempt %d in %.0f s",
            position_id,
            order.reject_reason,
            attempt + 2,
            self.expiry_retry_after,
        )
        self._expiry_retry[position_id] = (attempt + 1, self._monotonic() + self.expiry_retry_after)

    async def _settle_from_exchange(self, ledger: ExchangeLedger, facts: list, produce: list, now: datetime) -> None:
        """What the live exchange did to the positions: funding payments (shared by quantity among the
        positions of the symbol that held it, each applied once: by its income id; a position closed
        before the payment was reported gets its share added to its realized PnL) and the fills of a
        stop-loss or take-profit that fired there (the position closes at the exchange's price, fee
        and time)."""
        positions = list(self.open.values())
        entries = {ids.client_order_id(p.order_id): p.position_id for p in positions}
        since = min([now - LATE_FUNDING_WINDOW, *(p.opened_at for p in positions)])
        self._next_late_funding = self._monotonic() + self.late_funding_every
        found = await ledger.entries(list(entries), None, since)
        for payment in found.funding:
            if payment.tran_id in self._funding_seen:
                continue
            if self.ownership is not None and not self.ownership.owns(payment.symbol):
                continue
            holders = [p for p in self.open.values() if p.symbol == payment.symbol and p.opened_at <= payment.time]
            total = sum((p.quantity for p in holders), ZERO) + sum((h.quantity for h in payment.closed_holders), ZERO)
            if total <= 0:
                continue
            self._funding_seen.add(payment.tran_id)
            for holder in holders:
                share = money(payment.amount * holder.quantity / total)
                update = apply_funding(
                    holder, amount_paid=-share, time=payment.time, cause_id=f"funding:{ledger.name}:{payment.tran_id}"
                )
                facts.append(
                    ExchangeFundingApplied(holder.position_id, ledger.name, payment.tran_id, share, payment.time)
                )
                self._apply(update, f"funding:{payment.tran_id}", facts, produce)
            for closed in payment.closed_holders:
                share = money(payment.amount * closed.quantity / total)
                logger.info(
                    "positions: funding %s of %s (income %s) reported after %s closed: its realized PnL %+f",
                    payment.amount,
                    payment.symbol,
                    payment.tran_id,
                    closed.position_id,
                    share,
                )
                facts.append(
                    ExchangeFundingApplied(
                        closed.position_id, ledger.name, payment.tran_id, share, payment.time, after_close=True
                    )
                )
                self.realized += share
        for entry_id, fills in found.close_fills.items():
            position = self.open.get(entries.get(entry_id, ""))
            if position is None or not fills:
                continue
            quantity = sum((f.quantity for f in fills), ZERO)
            if quantity < position.quantity:
                logger.info(
                    "positions: %s filled %s of %s at the exchange so far",
                    position.position_id,
                    quantity,
                    position.quantity,
                )
                continue
            unknown = [f.trade_id for f in fills if f.commission is None]
            if unknown:
                # Its fee is not known in USDT yet (BNB's price could not be read): closing now would count
                # it as 0. Reconciliation retries the conversion (and lists it meanwhile); closed then.
                if position.position_id in self._fee_waits:
                    continue
                self._fee_waits.add(position.position_id)
                logger.warning(
                    "positions: %s closed at the exchange, waiting for the USDT commission of trade(s) %s",
                    position.position_id,
                    ", ".join(map(str, unknown)),
                )
                continue
            update = close_by_order(
                position,
                fill=_exchange_fill(position, fills),
                config=self.config.for_symbol(position.symbol),
                funding_rate=self.funding,
                cause_id=f"exchange:{ledger.name}:" + ",".join(str(f.trade_id) for f in fills),
                reason="take_profit" if fills[-1].kind == "take_profit" else "stop_loss",
                exchange_settles=True,
            )
            self._apply(update, f"exchange-close:{fills[-1].trade_id}", facts, produce)

    def _apply(self, update: Update, cause: str, facts: list, produce: list) -> None:
        position = update.position
        for event in update.events:
            if event.kind in ("closed", "liquidated", "expired"):
                self.realized += position.realized_pnl
            if event.kind == "tick" and not self._mark_due(position.position_id, event.time):
                # not published: only the position's latest state in the batch is written (see _flush)
                self._unpublished[position.position_id] = (position, event, cause, self.equity, facts)
                continue
            self._unpublished.pop(position.position_id, None)
            message = position_message(position, event, cause=cause, equity=self.equity)
            produce.append(message)
            facts.append(PositionChanged(message, position))
        if position.is_open:
            self.open[position.position_id] = position
            self._by_symbol.setdefault(position.symbol, {})[position.position_id] = position
        else:
            self.open.pop(position.position_id, None)
            self._by_symbol.get(position.symbol, {}).pop(position.position_id, None)
            self.last_mark.pop(position.position_id, None)
            self._expiry_issued.pop(position.position_id, None)
            self._expiry_retry.pop(position.position_id, None)

    def _flush(self) -> None:
        """Write the latest unpublished state of each position marked in the batch, with the input
        that produced it (PostgreSQL and Redis keep only the latest state anyway)."""
        for position, event, cause, equity, facts in self._unpublished.values():
            message = position_message(position, event, cause=cause, equity=equity)
            facts.append(PositionChanged(message, position, published=False))
        self._unpublished.clear()

    def _mark_due(self, position_id: str, time: datetime) -> bool:
        last = self.last_mark.get(position_id)
        if last is not None and time - last < self.mark_interval:
            return False
        self.last_mark[position_id] = time
        return True


def _exchange_fill(position: Position, items: Sequence[ExchangeCloseFill]) -> Fill:
    """The exchange's fills of a protection order as one fill: volume-weighted price, summed commission."""
    quantity = sum((f.quantity for f in items), ZERO)
    notional = sum((f.price * f.quantity for f in items), ZERO)
    price = (notional / quantity).quantize(Decimal("0.00000001"))
    return Fill(
        side=exit_order_side(position.side),
        price=price,
        quantity=quantity,
        notional=notional,
        fee=sum((f.commission or ZERO for f in items), ZERO),
        slippage_rate=ZERO,
        reference_price=price,
        time=max(f.time for f in items),
    )


#: How far back funding reported after a position closed is looked for.
LATE_FUNDING_WINDOW = timedelta(days=3)

#: Refusals after which an expiry close is not sent again: the order may exist (reconciliation settles
#: it), or the position is not open any more.
_NOT_RETRIED = frozenset({"EXCHANGE_STATUS_UNKNOWN", "POSITION_NOT_OPEN"})
