"""The compliance monitor's protections, pure: book figures over time and the trips they cause.

`BookMonitor` is fed the book as it happens (closes with their realized PnL and reason, equity
marks) and answers with `Trip`s:

- DAILY_LOSS_LIMIT: the day's loss (the day in `day_timezone`, UTC by default; realized plus the change in unrealized) at or over N %
  of the start-of-day equity: halt trading.
- MAX_DRAWDOWN: equity at or over N % below its peak: halt trading.
- STOPLOSS_GUARD: K stop-losses within T minutes on a symbol (or in total, scope "all"): lock the
  symbol (or every symbol) for a cooldown.
- COOLDOWN: after a symbol's position closes, no new entry on it for N minutes (a lock).

PRICE_COLLAR is checked by the risk stage at decision time (`domain.risk.evaluate`). Percentages
are fractions of 100 (`Decimal("5")` is 5 %); zero turns a protection off.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from phoenix95.domain.risk import ALL_SYMBOLS, RiskReason, SymbolLock

ZERO = Decimal(0)
HALT_REASONS = ("DAILY_LOSS_LIMIT", "MAX_DRAWDOWN")
#: Close reasons counted as stop-losses (a liquidation is a worse one).
STOP_LOSS_REASONS = frozenset({"stop_loss", "liquidation", "liquidated"})


@dataclass(frozen=True)
class ProtectionConfig:
    daily_loss_limit_pct: Decimal = Decimal("10")
    max_drawdown_pct: Decimal = Decimal("25")
    stoploss_guard_count: int = 5
    stoploss_guard_window: timedelta = timedelta(minutes=60)
    stoploss_guard_lock: timedelta = timedelta(minutes=60)
    stoploss_guard_scope: Literal["symbol", "all"] = "symbol"
    cooldown: timedelta = timedelta(0)
    #: Where a trading day starts and ends (DAILY_LOSS_LIMIT's day): an IANA time zone name.
    day_timezone: str = "UTC"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.day_timezone)

    def day_of(self, at: datetime) -> str:
        """The trading day `at` falls in (ISO date in `day_timezone`)."""
        return at.astimezone(self.zone).date().isoformat()

    def day_start(self, at: datetime) -> datetime:
        """The start of the trading day `at` falls in."""
        local = at.astimezone(self.zone)
        return datetime.combine(local.date(), datetime.min.time(), tzinfo=self.zone).astimezone(at.tzinfo)

    def next_day_start(self, at: datetime) -> datetime:
        """The start of the trading day after the one `at` falls in."""
        local = at.astimezone(self.zone)
        midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), tzinfo=self.zone)
        return midnight.astimezone(at.tzinfo)

    def problems(self) -> list[str]:
        """Invalid settings, one line each naming the setting (refused at start)."""
        found = []
        for name in ("daily_loss_limit_pct", "max_drawdown_pct"):
            value = getattr(self, name)
            if not ZERO <= value <= 100:
                found.append(f"compliance.{name} must be between 0 and 100 (percent), not {value}")
        if self.stoploss_guard_count < 0:
            found.append(f"compliance.stoploss_guard_count must be >= 0, not {self.stoploss_guard_count}")
        for name in ("stoploss_guard_window", "stoploss_guard_lock", "cooldown"):
            if getattr(self, name) < timedelta(0):
                found.append(f"compliance.{name}_min must be >= 0, not {getattr(self, name).total_seconds() / 60:g}")
        try:
            ZoneInfo(self.day_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            found.append(
                f"compliance.day_timezone must be an IANA time zone such as UTC or Asia/Seoul, not {self.day_timezone!r}"
            )
        if self.stoploss_guard_scope not in ("symbol", "all"):
            found.append(f"compliance.stoploss_guard_scope must be symbol or all, not {self.stoploss_guard_scope!r}")
        return found


@dataclass(frozen=True)
class Trip:
    """A protection tripped: halt trading (`halt`) or lock `lock.symbol`; with the figures."""

    reason: str
    at: datetime
    message: str
    figures: dict[str, str]
    halt: bool = False
    lock: SymbolLock | None = None


@dataclass
class BookMonitor:
    config: ProtectionConfig
    starting_equity: Decimal
    realized: Decimal = ZERO
    unrealized: Decimal = ZERO
    peak_equity: Decimal = ZERO
    day: str | None = None
    day_start_equity: Decimal = ZERO
    halted_for: set[str] = field(default_factory=set)
    stop_losses: dict[str, deque[datetime]] = field(default_factory=dict)
    #: Stop-losses in a row (a close for another reason ends a streak), per symbol and in total
    #: (`ALL_SYMBOLS`).
    streaks: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.peak_equity = max(self.peak_equity, self.starting_equity)

    @property
    def equity(self) -> Decimal:
        return self.starting_equity + self.realized + self.unrealized

    def _roll_day(self, at: datetime) -> None:
        day = self.config.day_of(at)
        if day != self.day:
            self.day = day
            self.day_start_equity = self.equity
            self.halted_for.discard("DAILY_LOSS_LIMIT")

    def mark(self, unrealized: Decimal, at: datetime) -> list[Trip]:
        """The open positions' unrealized PnL changed."""
        self._roll_day(at)
        self.unrealized = unrealized
        return self._equity_trips(at)

    def close(self, symbol: str, realized_pnl: Decimal, close_reason: str | None, at: datetime) -> list[Trip]:
        """A position closed with `realized_pnl` (its unrealized part leaves with it: mark again)."""
        self._roll_day(at)
        self.realized += realized_pnl
        stopped = (close_reason or "") in STOP_LOSS_REASONS
        for key in (symbol, ALL_SYMBOLS):
            self.streaks[key] = self.streaks.get(key, 0) + 1 if stopped else 0
        trips = self._equity_trips(at)
        cfg = self.config
        if cfg.cooldown > timedelta(0):
            trips.append(
                Trip(
                    RiskReason.COOLDOWN.value,
                    at,
                    f"{symbol} closed: no new entry for {cfg.cooldown.total_seconds() / 60:g} min",
                    {"symbol": symbol, "cooldown_min": f"{cfg.cooldown.total_seconds() / 60:g}"},
                    lock=SymbolLock(symbol, RiskReason.COOLDOWN, at + cfg.cooldown, "cooldown after a close"),
                )
            )
        if cfg.stoploss_guard_count > 0 and (close_reason or "") in STOP_LOSS_REASONS:
            key = symbol if cfg.stoploss_guard_scope == "symbol" else ALL_SYMBOLS
            recent = self.stop_losses.setdefault(key, deque())
            recent.append(at)
            while recent and recent[0] <= at - cfg.stoploss_guard_window:
                recent.popleft()
            if len(recent) >= cfg.stoploss_guard_count:
                until = at + cfg.stoploss_guard_lock
                count = len(recent)
                recent.clear()
                trips.append(
                    Trip(
                        RiskReason.STOPLOSS_GUARD.value,
                        at,
                        f"{count} stop-losses on {key} within {cfg.stoploss_guard_window.total_seconds() / 60:g} min:"
                        f" {key} locked until {until.isoformat()}",
                        {
                            "symbol": key,
                            "stop_losses": str(count),
                            "window_min": f"{cfg.stoploss_guard_window.total_seconds() / 60:g}",
                            "until": until.isoformat(),
                        },
                        lock=SymbolLock(key, RiskReason.STOPLOSS_GUARD, until, f"{count} stop-losses"),
                    )
                )
        return trips

    @property
    def drawdown_pct(self) -> Decimal:
        if self.peak_equity <= 0:
            return ZERO
        return (self.peak_equity - self.equity) / self.peak_equity * 100

    @property
    def day_pnl(self) -> Decimal:
        """Realized plus unrealized change since the day started (0 before the first figure)."""
        return self.equity - self.day_start_equity if self.day is not None else ZERO

    def _equity_trips(self, at: datetime) -> list[Trip]:
        trips = []
        equity = self.equity
        self.peak_equity = max(self.peak_equity, equity)
        cfg = self.config
        figures = {
            "equity": str(equity),
            "peak_equity": str(self.peak_equity),
            "day_start_equity": str(self.day_start_equity),
            "realized_pnl": str(self.realized),
            "unrealized_pnl": str(self.unrealized),
        }
        loss = self.day_start_equity - equity
        if cfg.daily_loss_limit_pct > 0 and self.day_start_equity > 0 and "DAILY_LOSS_LIMIT" not in self.halted_for:
            loss_pct = loss / self.day_start_equity * 100
            if loss_pct >= cfg.daily_loss_limit_pct:
                self.halted_for.add("DAILY_LOSS_LIMIT")
                trips.append(
                    Trip(
                        "DAILY_LOSS_LIMIT",
                        at,
                        f"day loss {loss_pct:.2f}% of start-of-day equity >= {cfg.daily_loss_limit_pct}%",
                        {**figures, "day_loss_pct": f"{loss_pct:.4f}", "limit_pct": str(cfg.daily_loss_limit_pct)},
                        halt=True,
                    )
                )
        if cfg.max_drawdown_pct > 0 and self.peak_equity > 0 and "MAX_DRAWDOWN" not in self.halted_for:
            drawdown_pct = (self.peak_equity - equity) / self.peak_equity * 100
            if drawdown_pct >= cfg.max_drawdown_pct:
                self.halted_for.add("MAX_DRAWDOWN")
                trips.append(
                    Trip(
                        "MAX_DRAWDOWN",
                        at,
                        f"drawdown {drawdown_pct:.2f}% from the equity peak >= {cfg.max_drawdown_pct}%",
                        {**figures, "drawdown_pct": f"{drawdown_pct:.4f}", "limit_pct": str(cfg.max_drawdown_pct)},
                        halt=True,
                    )
                )
        return trips


@dataclass(frozen=True, order=True)
class ClosedFact:
    """A position close as the protections see it, in their canonical order (time, symbol, id)."""

    closed_at: datetime
    symbol: str
    position_id: str
    realized_pnl: Decimal
    close_reason: str | None


@dataclass
class EventClockProtections:
    """The protections on the event clock (replays, the demo): the risk decision core feeds it the
    book's closes and asks, at each decision time, whether trading is halted and what is locked.

    The figures are those of the closes before the decision time, taken in canonical order (close
    time, symbol, position id), so a decision depends only on which closes exist before it, never
    on the order they were learned in: the in-process and the Kafka-mode replay learn them in
    different orders and decide alike. A close learned late (an expiry found only at the symbol's
    next price) that sorts before one already counted rebuilds the figures from the start.

    Halts and locks are held in memory in event time: DAILY_LOSS_LIMIT halts until the next trading day,
    MAX_DRAWDOWN for the rest of the run (no one resumes a replay), a lock until its time. Only the
    realized equity counts (a replay has no 5-second marks of the open positions)."""

    config: ProtectionConfig
    starting_equity: Decimal
    facts: list[ClosedFact] = field(default_factory=list)
    known: set[str] = field(default_factory=set)
    trips: list[Trip] = field(default_factory=list)
    _fed: int = 0
    _monitor: BookMonitor | None = None

    @property
    def enabled(self) -> bool:
        cfg = self.config
        return bool(
            cfg.daily_loss_limit_pct > 0
            or cfg.max_drawdown_pct > 0
            or cfg.stoploss_guard_count > 0
            or cfg.cooldown > timedelta(0)
        )

    def learn(self, facts: Iterable[ClosedFact]) -> None:
        """Closes as they become known (each once; a position id seen before is ignored)."""
        for fact in facts:
            if fact.position_id in self.known:
                continue
            self.known.add(fact.position_id)
            index = bisect.bisect(self.facts, fact)
            if index < self._fed:
                self._rebuild()
            self.facts.insert(index, fact)

    def _rebuild(self) -> None:
        self._monitor = None
        self._fed = 0
        self.trips = []

    def advance(self, until: datetime) -> None:
        """Count the closes before `until`."""
        if self._monitor is None:
            self._monitor = BookMonitor(self.config, self.starting_equity)
        facts, monitor = self.facts, self._monitor
        while self._fed < len(facts) and facts[self._fed].closed_at < until:
            fact = facts[self._fed]
            self.trips.extend(monitor.close(fact.symbol, fact.realized_pnl, fact.close_reason, fact.closed_at))
            self._fed += 1

    def halt_at(self, at: datetime) -> Trip | None:
        """The trip that halts trading at `at`, if any."""
        for trip in reversed(self.trips):
            if not trip.halt or trip.at >= at:
                continue
            if trip.reason == "MAX_DRAWDOWN" or at < self.config.next_day_start(trip.at):
                return trip
        return None

    def locks_at(self, at: datetime) -> dict[str, SymbolLock]:
        """The locks in force at `at`, by symbol (the longest one where several apply)."""
        locks: dict[str, SymbolLock] = {}
        for trip in self.trips:
            lock = trip.lock
            if lock is None or trip.at >= at or lock.until <= at:
                continue
            held = locks.get(lock.symbol)
            if held is None or held.until < lock.until:
                locks[lock.symbol] = lock
        return locks


def trips_of(facts: Iterable[ClosedFact], config: ProtectionConfig, starting_equity: Decimal) -> list[Trip]:
    """Every trip a run's closes cause, in the canonical order (what a replay's digest records)."""
    protections = EventClockProtections(config, starting_equity)
    if not protections.enabled:
        return []
    protections.learn(facts)
    if protections.facts:
        protections.advance(protections.facts[-1].closed_at + timedelta(microseconds=1))
    return protections.trips
