"""Recent approvals and signals of a risk desk, kept sorted by time so that the rate limit and the
duplicate check cost a binary search, not a scan of every signal of the last minutes.

Decisions need not arrive in time order (partitions of a topic move at their own pace), so entries
are inserted in order rather than appended, and the answers are exactly those of a full scan.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable
from datetime import datetime, timedelta

from phoenix95.domain.risk import RecentSignal, RiskRequest

_Key = tuple[str, str, str, str]


def _key(symbol: str, side: str, strategy: str, timeframe: str) -> _Key:
    return (symbol, side, strategy, timeframe)


class RecentActivity:
    def __init__(self, approvals: Iterable[datetime] = (), signals: Iterable[RecentSignal] = ()):
        self._approvals: list[datetime] = sorted(approvals)
        #: Per (symbol, side, strategy, timeframe): (time, insertion number, signal), sorted.
        self._signals: dict[_Key, list[tuple[datetime, int, RecentSignal]]] = {}
        self._added = 0
        for signal in signals:
            self.add_signal(signal)

    def add_approval(self, time: datetime) -> None:
        insort(self._approvals, time)

    def add_signal(self, signal: RecentSignal) -> None:
        entries = self._signals.setdefault(_key(signal.symbol, signal.side, signal.strategy, signal.timeframe), [])
        insort(entries, (signal.time, self._added, signal))
        self._added += 1

    def trim(self, approvals_before: datetime, signals_before: datetime) -> None:
        """Forget approvals and signals older than the given times."""
        del self._approvals[: bisect_left(self._approvals, approvals_before)]
        for key in list(self._signals):
            entries = self._signals[key]
            del entries[: bisect_left(entries, (signals_before,))]
            if not entries:
                del self._signals[key]

    def approvals_since(self, start: datetime) -> int:
        """Approvals strictly after `start`."""
        return len(self._approvals) - bisect_right(self._approvals, start)

    def find_duplicate(self, request: RiskRequest, window: timedelta) -> RecentSignal | None:
        """The earliest other signal of the same symbol, side, strategy and timeframe within
        `window` of the request's time."""
        entries = self._signals.get(_key(request.symbol, request.side, request.strategy, request.timeframe))
        if not entries:
            return None
        start = bisect_left(entries, (request.signal_time - window,))
        for time, _, signal in entries[start:]:
            if time > request.signal_time + window:
                break
            if signal.signal_id != request.signal_id:
                return signal
        return None

    @property
    def approvals(self) -> list[datetime]:
        return list(self._approvals)

    @property
    def signals(self) -> list[RecentSignal]:
        return [signal for entries in self._signals.values() for _, _, signal in entries]
