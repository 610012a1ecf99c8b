"""Reconciliation: the exchange's orders, fills and positions against PostgreSQL.

Run on start before any new order (``act``: adopt, close, and fail closed) and every minute while
running (report). What it does, per difference:

- an order sent but not settled (a crash or an ambiguous answer): asked for by client order id and
  settled (adopted when filled) - resolved; still unknown - **unresolved**;
- fills the exchange made that PostgreSQL has not recorded (while Phoenix95 was down): adopted into
  ``exchange_fills`` with their fees; funding likewise into ``exchange_income`` - resolved;
- a protection order that fired: the other one is cancelled - resolved;
- a fill whose commission (paid in BNB) is not known in USDT: converted again (BNB's price at the
  trade's time), else listed (``fee_unconverted``) - resolved, a warning;
- a position open in PostgreSQL that the exchange has closed (a stop fired, closed by hand,
  liquidated): closed in PostgreSQL with the exchange's closing fills - price, commission in USDT -
  once (``act``) - resolved; its fills not found or their fee not known in USDT - **unresolved**;
- a position at the exchange that Phoenix95 did not open, or one whose size differs: **unresolved**.

Unresolved differences leave trading HALTED with the differences listed (fail closed); every run is
stored in ``exchange_reconciliations`` and published as a ControlEvent (kind ``reconciliation``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from phoenix95.connectors.exchange import binance_parse as parse
from phoenix95.connectors.exchange.binance import BinanceExchange
from phoenix95.connectors.exchange.binance_rest import AmbiguousResponse, ExchangeError, ExchangeHalted
from phoenix95.connectors.exchange.intents import UNSETTLED
from phoenix95.domain.positions import realized_pnl
from phoenix95.domain.trading_state import TradingState
from phoenix95.domain.values import money
from phoenix95.storage import queries
from phoenix95.storage.postgres import Database

logger = logging.getLogger(__name__)


@dataclass
class Difference:
    kind: str
    subject: str
    detail: str
    resolved: bool
    action: str = ""


@dataclass
class Report:
    exchange: str
    trigger: str
    at: str
    differences: list[Difference] = field(default_factory=list)
    adopted_fills: int = 0
    adopted_income: int = 0
    halted: bool = False
    error: str | None = None

    @property
    def unresolved(self) -> list[Difference]:
        return [d for d in self.differences if not d.resolved]

    @property
    def ok(self) -> bool:
        return self.error is None and not self.unresolved

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data

    def summary(self) -> str:
        if self.error:
            return f"reconciliation failed: {self.error}"
        if not self.differences:
            return "reconciliation: the exchange and PostgreSQL agree"
        unresolved = self.unresolved
        text = f"reconciliation: {len(self.differences)} difference(s), {len(unresolved)} unresolved"
        if unresolved:
            text += ": " + "; ".join(f"{d.kind} {d.subject} ({d.detail})" for d in unresolved[:5])
        return text


class Reconciler:
    def __init__(self, exchange: BinanceExchange, database: Database, *, symbols: list[str] | None = None):
        self.exchange = exchange
        self.database = database
        self.store = exchange.store
        self.symbols = symbols or []

    async def run(self, *, trigger: str, act: bool, halt: bool) -> Report:
        report = Report(exchange=self.exchange.name, trigger=trigger, at=datetime.now(UTC).isoformat())
        try:
            await self._orders(report, wait=act)
            exchange_positions = {p.symbol: p for p in await self.exchange.positions()}
            since = await self._since()
            symbols = sorted(set(self.symbols) | set(exchange_positions) | set(await self._pg_symbols(since)))
            await self._fills(report, symbols, since)
            await self._fees(report)
            await self._income(report, since)
            for done in await self.exchange.check_protection():
                if done.endswith(" fired"):
                    report.differences.append(Difference("protection_fired", done.split()[1], done, True))
                elif report.differences and report.differences[-1].kind == "protection_fired":
                    report.differences[-1].action = (report.differences[-1].action + "; " + done).strip("; ")
            await self._positions(report, exchange_positions, act=act)
            await self._open_orders(report)
        except (ExchangeError, AmbiguousResponse, ExchangeHalted, parse.Malformed) as error:
            report.error = str(error)[:300]
        report.halted = halt and not report.ok
        await self._store(report)
        if report.halted:
            await queries.set_trading_state(
                self.database, TradingState.HALTED, reason=report.summary()[:500], actor="reconciliation"
            )
        log = logger.warning if report.differences or report.error else logger.info
        log("%s", report.summary())
        return report

    async def _since(self) -> datetime:
        rows = await self.database.fetch("SELECT MAX(at) FROM exchange_reconciliations WHERE error_free")
        last = rows[0][0] if rows and rows[0][0] is not None else None
        floor = datetime.now(UTC) - timedelta(days=6)
        return max(floor, last - timedelta(hours=1)) if last is not None else datetime.now(UTC) - timedelta(days=1)

    async def _pg_symbols(self, since: datetime) -> list[str]:
        rows = await self.database.fetch(
            "SELECT DISTINCT symbol FROM positions WHERE status = 'open'"
            " UNION SELECT DISTINCT symbol FROM exchange_intents WHERE created_at >= %s",
            (since,),
        )
        return [row[0] for row in rows]

    async def _orders(self, report: Report, *, wait: bool) -> None:
        for intent in await self.store.with_status(list(UNSETTLED), ["entry", "exit"]):
            settled = await self.exchange._resolve(intent, attempts=1)
            if settled.status in UNSETTLED and wait and intent.created_at is not None:
                # Sent (or about to be) by a worker that died: once recvWindow has passed, the exchange
                # either has it or never will. At start, wait for that rather than halt on it.
                remaining = self.exchange.unknown_until(intent.created_at)
                if 0 < remaining <= 60:
                    await asyncio.sleep(remaining)
                    settled = await self.exchange._resolve(settled, attempts=1)
            if settled.status in UNSETTLED:
                report.differences.append(
                    Difference(
                        "order_unknown",
                        intent.client_order_id,
                        f"{intent.side} {intent.quantity} {intent.symbol}: the exchange's answer is unknown",
                        False,
                    )
                )
            else:
                report.differences.append(
                    Difference(
                        "order_settled",
                        intent.client_order_id,
                        f"{intent.side} {intent.quantity} {intent.symbol} is {settled.status} at the exchange",
                        True,
                        "adopted" if settled.status == "FILLED" else "recorded",
                    )
                )

    async def _fills(self, report: Report, symbols: list[str], since: datetime) -> None:
        start = int(since.timestamp() * 1000)
        for symbol in symbols:
            try:
                trades = await self.exchange.rest.call(
                    "fapiPrivateGetUserTrades", {"symbol": symbol, "startTime": start, "limit": 1000}, weight=5
                )
            except ExchangeError as error:
                if error.code != -1121:  # a configured symbol the exchange does not list: nothing to adopt
                    raise
                logger.warning("reconciliation: %s is not listed by the exchange", symbol)
                continue
            if not isinstance(trades, list):
                raise parse.Malformed(f"userTrades of {symbol} is not a list")
            _, new = await self.exchange.record_fills(trades, adopted=True)
            if new:
                report.adopted_fills += new
                report.differences.append(
                    Difference(
                        "fills_adopted",
                        symbol,
                        f"{new} fill(s) made while Phoenix95 did not see them",
                        True,
                        "recorded with their fees",
                    )
                )

    async def _fees(self, report: Report) -> None:
        """Fills whose commission (paid in BNB) is not known in USDT: converted now if BNB's price (at
        the trade's time) can be read; else listed, so an unknown fee never counts as 0 unseen (the
        positions stage and `_positions` wait for it before closing a position with that fill)."""
        for symbol, trade_id, commission in await self.exchange.convert_pending():
            report.differences.append(
                Difference(
                    "fee_unconverted",
                    f"{symbol}#{trade_id}",
                    f"commission {commission} of trade {trade_id} not known in USDT (the asset's price could not"
                    " be read); a position closed by this fill stays open until it is",
                    True,
                    "retried at every reconciliation",
                )
            )

    async def _income(self, report: Report, since: datetime) -> None:
        answer = await self.exchange.rest.call(
            "fapiPrivateGetIncome", {"startTime": int(since.timestamp() * 1000), "limit": 1000}, weight=30
        )
        if not isinstance(answer, list):
            raise parse.Malformed("income answer is not a list")
        rows = parse.income_rows(answer)
        report.adopted_income += await self.store.record_income(self.exchange.name, rows)

    async def _positions(
        self, report: Report, exchange_positions: dict[str, parse.ExchangePosition], *, act: bool
    ) -> None:
        rows = await self.database.fetch(
            "SELECT position_id::text, symbol, side, quantity, opened_at FROM positions WHERE status = 'open'"
        )
        ours: dict[str, list[tuple[str, str, Decimal, datetime]]] = {}
        for position_id, symbol, side, quantity, opened_at in rows:
            ours.setdefault(symbol, []).append((position_id, side, Decimal(quantity), opened_at))
        in_flight = await self._in_flight(report)
        for symbol in sorted(set(ours) | set(exchange_positions) | set(in_flight)):
            mine = ours.get(symbol, [])
            net = sum((q if side == "long" else -q for _, side, q, _ in mine), in_flight.get(symbol, Decimal(0)))
            theirs = exchange_positions.get(symbol)
            amount = theirs.amount if theirs is not None else Decimal(0)
            if amount == net:
                continue
            if theirs is None:
                await self._closed_at_exchange(report, symbol, mine, net, act=act)
            elif not mine and not in_flight.get(symbol):
                report.differences.append(
                    Difference(
                        "unknown_position",
                        symbol,
                        f"the exchange has {amount} {symbol} (entry {theirs.entry_price}) that Phoenix95 did not open",
                        False,
                    )
                )
            else:
                report.differences.append(
                    Difference("quantity_mismatch", symbol, f"PostgreSQL has {net}, the exchange has {amount}", False)
                )

    async def _in_flight(self, report: Report) -> dict[str, Decimal]:
        """Signed quantities the exchange filled that the pipeline has not turned into positions yet (the
        verdict is re-delivered after a crash and its order, found FILLED by its client order id, opens
        or closes the position then). An order recorded *rejected* that the exchange filled after all is
        a real difference."""
        rows = await self.database.fetch(
            """SELECT i.client_order_id, i.kind, i.symbol, i.side, COALESCE(i.executed_qty, i.quantity), o.status,
                      o.close_position_id::text,
                      EXISTS (SELECT 1 FROM trades t JOIN positions p ON p.trade_id = t.trade_id
                               WHERE t.order_id = o.order_id),
                      EXISTS (SELECT 1 FROM positions p WHERE p.position_id = o.close_position_id
                               AND p.status = 'open')
                 FROM exchange_intents i LEFT JOIN orders o ON o.client_order_id = i.client_order_id
                WHERE i.kind IN ('entry', 'exit') AND i.status = 'FILLED'
                  AND i.created_at >= NOW() - INTERVAL '7 days'"""
        )
        pending: dict[str, Decimal] = {}
        for client_id, kind, symbol, side, quantity, order_status, _, opened, still_open in rows:
            signed = Decimal(quantity) if side == "buy" else -Decimal(quantity)
            if order_status == "rejected":
                report.differences.append(
                    Difference(
                        "filled_after_rejection",
                        client_id,
                        f"{side} {quantity} {symbol} was reported rejected but the exchange filled it",
                        False,
                    )
                )
                continue
            waiting = order_status is None or (kind == "entry" and not opened) or (kind == "exit" and still_open)
            if waiting:
                pending[symbol] = pending.get(symbol, Decimal(0)) + signed
                report.differences.append(
                    Difference(
                        "order_in_flight",
                        client_id,
                        f"{side} {quantity} {symbol} filled at the exchange, not yet recorded by the pipeline",
                        True,
                        "recorded when its verdict is processed again",
                    )
                )
        return pending

    async def _closed_at_exchange(
        self, report: Report, symbol: str, mine: list[tuple[str, str, Decimal, datetime]], net: Decimal, *, act: bool
    ) -> None:
        """Open in PostgreSQL, flat at the exchange: close the positions (`act`) with the exchange's fills
        of that close - price, commission in USDT - so their realized PnL is the exchange's."""
        closing: list[tuple[int, Decimal, Decimal, Decimal | None, datetime]] = []
        problem = ""
        for side in ("long", "short"):
            group = [m for m in mine if m[1] == side]
            if not group:
                continue
            wanted = sum((q for _, _, q, _ in group), Decimal(0))
            fills = await self._closing_fills(symbol, "sell" if side == "long" else "buy", wanted, group)
            if sum((f[2] for f in fills), Decimal(0)) < wanted:
                problem = f"the exchange's fills closing {wanted} {side} were not found"
                break
            if any(f[3] is None for f in fills):
                unknown = [str(f[0]) for f in fills if f[3] is None]
                problem = f"the commission of closing trade(s) {', '.join(unknown)} is not known in USDT yet"
                break
            closing += fills
            if act:
                await self._close_group(group, fills, wanted)
        price = _vwap(closing) if closing else None
        if problem:
            report.differences.append(
                Difference(
                    "position_closed_at_exchange",
                    symbol,
                    f"PostgreSQL has {net} open, the exchange has none: {problem}; left open",
                    False,
                )
            )
            return
        action = ""
        if act:
            await self.exchange.cancel_all(symbol)
            fee = sum((f[3] or Decimal(0) for f in closing), Decimal(0))
            action = f"closed {len(mine)} position(s) in PostgreSQL at {price}, exit commission {fee} USDT"
        report.differences.append(
            Difference(
                "position_closed_at_exchange",
                symbol,
                f"PostgreSQL has {net} open, the exchange has none (closing fill {price})",
                act,
                action,
            )
        )

    async def _closing_fills(
        self, symbol: str, side: str, wanted: Decimal, group: list[tuple[str, str, Decimal, datetime]]
    ) -> list[tuple[int, Decimal, Decimal, Decimal | None, datetime]]:
        """The latest fills of `side` since the positions opened that add up to `wanted` (the last of them
        counted in part when it is larger): the exchange's close. (trade id, price, quantity counted,
        commission in USDT of that part or None, time)."""
        rows = await self.database.fetch(
            "SELECT trade_id, price, quantity, commission_usdt, traded_at FROM exchange_fills"
            " WHERE exchange = %s AND symbol = %s AND side = %s AND traded_at >= %s"
            " ORDER BY traded_at DESC, trade_id DESC",
            (self.exchange.name, symbol, side, min(opened for _, _, _, opened in group)),
        )
        out: list[tuple[int, Decimal, Decimal, Decimal | None, datetime]] = []
        left = wanted
        for trade_id, price, quantity, commission, traded_at in rows:
            if left <= 0:
                break
            quantity = Decimal(quantity)
            part = min(quantity, left)
            fee = None if commission is None else Decimal(commission) * part / quantity
            out.append((int(trade_id), Decimal(price), part, fee, traded_at))
            left -= part
        return out[::-1]

    async def _close_group(
        self,
        group: list[tuple[str, str, Decimal, datetime]],
        fills: list[tuple[int, Decimal, Decimal, Decimal | None, datetime]],
        wanted: Decimal,
    ) -> None:
        """Close each position at the fills' volume-weighted price, with its share (by quantity) of their
        commission: realized PnL by the domain's rule (`domain.positions.realized_pnl`, half-even like every
        close). One guarded statement per position, only while it is open (its trade likewise, only while
        not closed): a rerun or a restart changes nothing."""
        price = _vwap(fills)
        fee = sum((f[3] or Decimal(0) for f in fills), Decimal(0))
        closed_at = max(f[4] for f in fills)
        for position_id, _, quantity, _ in group:
            exit_fee = money(fee * quantity / wanted)
            rows = await self.database.fetch(
                "SELECT side, quantity, entry_price, total_fees_paid, funding_paid FROM positions"
                " WHERE position_id = %s::uuid AND status = 'open'",
                (position_id,),
            )
            if not rows:
                continue
            side, held, entry, fees_before, funding = rows[0]
            realized = realized_pnl(side, held, entry, price, fees_before + exit_fee, funding)
            # Guarded by the fees and funding read above: a funding or fee recorded in between leaves the
            # position open, and the next reconciliation closes it with them.
            await self.database.execute(
                """WITH closed AS (
                       UPDATE positions SET status = 'closed', close_reason = 'EXCHANGE_CLOSED',
                           forced_close_reason = 'closed at the exchange while Phoenix95 did not see it (reconciliation)',
                           exit_price = %(price)s, current_price = %(price)s, unrealized_pnl = 0,
                           total_fees_paid = total_fees_paid + %(fee)s, realized_pnl = %(realized)s,
                           closed_at = %(at)s, last_price_update = GREATEST(last_price_update, %(at)s)
                        WHERE position_id = %(id)s::uuid AND status = 'open'
                          AND total_fees_paid = %(fees_before)s AND funding_paid = %(funding)s
                       RETURNING trade_id, exit_price, realized_pnl, total_fees_paid, funding_paid, initial_margin,
                                 closed_at)
                   UPDATE trades t SET exit_price = c.exit_price, realized_pnl = c.realized_pnl,
                          total_pnl = c.realized_pnl, unrealized_pnl = 0, position_closed_at = c.closed_at,
                          close_reason = 'EXCHANGE_CLOSED', trading_fee_amount = c.total_fees_paid,
                          funding_fee_amount = c.funding_paid,
                          roe_percent = CASE WHEN c.initial_margin > 0 THEN c.realized_pnl / c.initial_margin * 100 END
                     FROM closed c WHERE t.trade_id = c.trade_id AND t.position_closed_at IS NULL""",
                {
                    "price": price,
                    "fee": exit_fee,
                    "realized": realized,
                    "at": closed_at,
                    "id": position_id,
                    "fees_before": fees_before,
                    "funding": funding,
                },
            )

    async def _open_orders(self, report: Report) -> None:
        answer = await self.exchange.rest.call("fapiPrivateGetOpenOrders", {}, weight=40)
        if not isinstance(answer, list):
            raise parse.Malformed("openOrders answer is not a list")
        for order in answer:
            client_id = str(order.get("clientOrderId", ""))
            if not client_id.startswith("p95-"):
                report.differences.append(
                    Difference(
                        "unknown_open_order",
                        str(order.get("symbol")),
                        f"open order {client_id or order.get('orderId')} not placed by Phoenix95",
                        True,
                        "left alone (flagged)",
                    )
                )

    async def _store(self, report: Report) -> None:
        details = [asdict(d) for d in report.differences]
        await self.database.execute(
            "INSERT INTO exchange_reconciliations (exchange, trigger, ok, halted, differences, actions, error_free)"
            " VALUES (%s, %s, %s, %s, %s::jsonb, %s::jsonb, %s)",
            (
                report.exchange,
                report.trigger,
                report.ok,
                report.halted,
                json.dumps(details, default=str),
                json.dumps([d.action for d in report.differences if d.action], default=str),
                report.error is None,
            ),
        )


def _vwap(fills: list[tuple[int, Decimal, Decimal, Decimal | None, datetime]]) -> Decimal:
    quantity = sum((f[2] for f in fills), Decimal(0))
    return (sum((f[1] * f[2] for f in fills), Decimal(0)) / quantity).quantize(Decimal("0.00000001"))
