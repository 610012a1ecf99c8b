"""Where to start and stop reading each partition.

`--from` takes `beginning`, `end`, an offset (`1234`), a count before the end (`-100`: the last 100
messages of each partition), a time (ISO-8601 such as `2026-11-24T10:00:00Z`, epoch milliseconds
such as `1795535710752`, `@1795535710752`, or a duration ago such as `15m`, `2h`, `1d`). A bare
integer of 12 digits or more is a time in epoch milliseconds, a shorter one an offset.

Time lookup. The broker's offset-for-time answer (ListOffsets with a timestamp) is checked against
the records on each side of it; when it is wrong a binary search with fetches finds the first record
whose timestamp is at or after the time. Tansu (the embedded broker) needs the search: it indexes by
the time it appended a batch, not by the records' timestamps, answers with the batch's first
offset, and answers offset 0 instead of "none" for a time after the last record.
Both assume timestamps grow with offsets, as Kafka's own time index does.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

StartKind = Literal["beginning", "end", "offset", "from_end", "time"]

#: Epoch milliseconds from this value up are times (2001-09-09), smaller integers are offsets.
EPOCH_MS_THRESHOLD = 10**12
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class PositionError(ValueError):
    """A start or stop position that cannot be read."""


@dataclass(frozen=True)
class StartSpec:
    """Where to start: `value` is the offset, the count before the end, or epoch ms."""

    kind: StartKind
    value: int = 0

    def describe(self) -> str:
        if self.kind in ("beginning", "end"):
            return self.kind
        if self.kind == "offset":
            return f"offset {self.value}"
        if self.kind == "from_end":
            return f"{self.value} before the end"
        return f"time {format_ms(self.value)}"


def parse_start(text: str, *, now: datetime | None = None) -> StartSpec:
    value = text.strip()
    lowered = value.lower()
    if lowered in ("beginning", "earliest", "start", "first"):
        return StartSpec("beginning")
    if lowered in ("end", "latest", "last"):
        return StartSpec("end")
    if re.fullmatch(r"-\d+", value):
        return StartSpec("from_end", int(value[1:]))
    if re.fullmatch(r"\d+", value) and int(value) < EPOCH_MS_THRESHOLD:
        return StartSpec("offset", int(value))
    try:
        return StartSpec("time", parse_time(value, now=now))
    except PositionError:
        raise PositionError(
            f"cannot read --from {text!r}: expected beginning, end, an offset, -N (N before the end), "
            "an ISO-8601 time, epoch milliseconds or a duration ago such as 15m"
        ) from None


def parse_time(text: str, *, now: datetime | None = None) -> int:
    """A time as epoch milliseconds: ISO-8601 (naive means UTC), epoch ms (`@` optional) or a
    duration ago (`90s`, `15m`, `2h`, `1d`)."""
    value = text.strip()
    if value.startswith("@"):
        value = value[1:]
    if re.fullmatch(r"\d+", value):
        return int(value)
    duration = _DURATION.match(value)
    if duration:
        seconds = float(duration.group(1)) * _DURATION_UNITS[duration.group(2)]
        return to_ms((now or datetime.now(UTC)) - timedelta(seconds=seconds))
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise PositionError(
            f"cannot read {text!r} as a time: expected ISO-8601, epoch milliseconds or a duration such as 15m"
        ) from None
    return to_ms(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def format_ms(epoch_ms: int) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- resolution -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bounds:
    """The offsets of a partition's first record and of the next record to be written."""

    beginning: int
    end: int


def start_offset(spec: StartSpec, bounds: Bounds) -> int | None:
    """The offset to start at, or None for a time (which needs `offset_for_time`)."""
    if spec.kind == "beginning":
        return bounds.beginning
    if spec.kind == "end":
        return bounds.end
    if spec.kind == "offset":
        return min(max(spec.value, bounds.beginning), bounds.end)
    if spec.kind == "from_end":
        return max(bounds.end - spec.value, bounds.beginning)
    return None


#: Records from an offset on: (offset, timestamp ms) pairs, offsets ascending, at least one when the
#: offset is below the end.
FetchTimestamps = Callable[[int], Awaitable[Sequence[tuple[int, int]]]]


async def offset_for_time(
    timestamp_ms: int, bounds: Bounds, fetch: FetchTimestamps, *, broker_answer: int | None = None
) -> tuple[int, int]:
    """The first offset whose record's timestamp is >= `timestamp_ms` (`bounds.end` when none is),
    and the number of fetches it took. `broker_answer` (the broker's offset-for-time, None for "no
    such record") is used when the records around it confirm it."""
    fetches = 0
    if bounds.end <= bounds.beginning:
        return bounds.end, fetches
    if broker_answer is not None and bounds.beginning <= broker_answer <= bounds.end:
        probe = max(broker_answer - 1, bounds.beginning)
        records = await fetch(probe)
        fetches += 1
        if _confirms(records, broker_answer, timestamp_ms, bounds):
            return broker_answer, fetches
    low, high = bounds.beginning, bounds.end  # offsets < low are earlier; offsets >= high are not
    while low < high:
        middle = (low + high) // 2
        records = await fetch(middle)
        fetches += 1
        previous: int | None = None
        found = False
        for offset, timestamp in records:
            if offset >= high:
                break
            if timestamp >= timestamp_ms:
                high = offset
                found = True
                break
            previous = offset
        if previous is not None:
            low = max(low, previous + 1)
        if not records:  # nothing at or after `middle` (a gap at the end): the answer is below
            high = middle
        elif not found and previous is None:
            high = min(high, middle)
    return high, fetches


def _confirms(records: Sequence[tuple[int, int]], answer: int, timestamp_ms: int, bounds: Bounds) -> bool:
    by_offset = dict(records)
    before_ok = answer == bounds.beginning or (answer - 1 in by_offset and by_offset[answer - 1] < timestamp_ms)
    at_ok = answer == bounds.end or (answer in by_offset and by_offset[answer] >= timestamp_ms)
    return before_ok and at_ok
