"""Every topic of the pipeline, in one place. Keys are the symbol, so per-symbol order holds."""

from __future__ import annotations

from dataclasses import dataclass

SIGNALS = "p95.signals"
ANALYSIS = "p95.analysis"
RISK_VERDICTS = "p95.risk.verdicts"
ORDERS = "p95.orders"
POSITION_TICKS = "p95.positions.ticks"
#: The position events the notification hub acts on, copied from the ticks by the producer
#: (`streams/lifecycle.py`): every open and close, and every change of a position's risk level.
#: A few per position instead of one per mark to market, so the hub stays off the per-tick path.
POSITION_LIFECYCLE = "p95.positions.lifecycle"
MARKET_PRICES = "p95.market.prices"
DLQ = "p95.dlq"
#: Trading-state changes (with their actor), protection trips, locks, reconciliation differences,
#: worker and health events: what the notification hub tells people about besides trades.
CONTROL_EVENTS = "p95.control.events"

ALL = (
    SIGNALS,
    ANALYSIS,
    RISK_VERDICTS,
    ORDERS,
    POSITION_TICKS,
    POSITION_LIFECYCLE,
    MARKET_PRICES,
    DLQ,
    CONTROL_EVENTS,
)

#: On the event clock (replays, the demo) the risk stage decides each signal at its own time on a
#: paper book; it must see the analyses in event-time order across *all* symbols, not only per
#: symbol, or a signal decided before an earlier one of another symbol has arrived sees another
#: book (another equity, other exposures). One partition for the signals and the analyses gives
#: that order (signals published in time order, as replays and the demo do); the prices keep their
#: partitions (the risk stage waits for each symbol's prices up to the signal).
ORDERED_ON_EVENT_CLOCK = (SIGNALS, ANALYSIS)


@dataclass(frozen=True)
class Topics:
    """Topic names under a namespace (tests and replays get their own prefix)."""

    namespace: str = ""

    def name(self, base: str) -> str:
        return f"{self.namespace}.{base}" if self.namespace else base

    def base(self, name: str) -> str:
        prefix = f"{self.namespace}."
        return name[len(prefix) :] if self.namespace and name.startswith(prefix) else name

    @property
    def signals(self) -> str:
        return self.name(SIGNALS)

    @property
    def analysis(self) -> str:
        return self.name(ANALYSIS)

    @property
    def risk_verdicts(self) -> str:
        return self.name(RISK_VERDICTS)

    @property
    def orders(self) -> str:
        return self.name(ORDERS)

    @property
    def position_ticks(self) -> str:
        return self.name(POSITION_TICKS)

    @property
    def position_lifecycle(self) -> str:
        return self.name(POSITION_LIFECYCLE)

    @property
    def market_prices(self) -> str:
        return self.name(MARKET_PRICES)

    @property
    def dlq(self) -> str:
        return self.name(DLQ)

    @property
    def control_events(self) -> str:
        return self.name(CONTROL_EVENTS)

    def all(self) -> tuple[str, ...]:
        return tuple(self.name(base) for base in ALL)

    def partition_counts(self, partitions: int, clock: str) -> dict[str, int]:
        """Partitions of each topic: `partitions`, but one for the signals and the analyses on the
        event clock (see ORDERED_ON_EVENT_CLOCK)."""
        ordered = clock == "event"
        return {self.name(base): 1 if ordered and base in ORDERED_ON_EVENT_CLOCK else partitions for base in ALL}

    def group(self, stage: str) -> str:
        """Consumer group (= Faust app id) of a stage."""
        return f"{self.namespace}.p95-{stage}" if self.namespace else f"p95-{stage}"
