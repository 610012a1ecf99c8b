"""The lazily decoded price history (domain/lazy_prices.py) answers what a `PriceHistory` of the valid
prices, decoded on arrival, answers: whichever prices turn out not to decode, whenever they are looked at."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from phoenix95.domain.execution import MarketTick, PriceHistory
from phoenix95.domain.lazy_prices import LazyPriceHistory, micros

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _tick(second: int, serial: int) -> MarketTick:
    return MarketTick("BTCUSDT", T0 + timedelta(seconds=second), Decimal(60000 + serial), event_id=f"p{serial}")


class _Payloads:
    """Payloads by serial number: a valid one decodes to its tick, an invalid one to None; counts decodes."""

    def __init__(self) -> None:
        self.ticks: dict[int, MarketTick | None] = {}
        self.decoded = 0

    def decode(self, serial: int) -> MarketTick | None:
        self.decoded += 1
        return self.ticks[serial]


# one step: (second, valid, eager, probe): append a price at `second` (decoded at once when `eager`), then
# ask for the first price at or after `probe` (None: ask for the first and the last price instead)
_steps = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=120),
        st.booleans(),
        st.booleans(),
        st.one_of(st.none(), st.integers(min_value=-2, max_value=125)),
    ),
    max_size=80,
)


def _run(steps: list[tuple[int, bool, bool, int | None]], maxlen: int) -> None:
    payloads = _Payloads()
    lazy: LazyPriceHistory[int] = LazyPriceHistory(payloads.decode, maxlen)
    eager = PriceHistory(maxlen)
    for serial, (second, valid, decode_now, probe) in enumerate(steps):
        tick = _tick(second, serial)
        payloads.ticks[serial] = tick if valid else None
        if decode_now:
            if valid:
                assert lazy.append(micros(tick.time), tick) == eager.append(tick)
        else:
            kept = lazy.append(micros(tick.time), serial)
            if valid:
                assert kept == eager.append(tick)
        if probe is None:
            assert lazy.first() is (eager[0] if len(eager) else None)
            assert lazy.last() is (eager[-1] if len(eager) else None)
        else:
            assert lazy.at_or_after(micros(T0 + timedelta(seconds=probe))) is eager.at_or_after(
                T0 + timedelta(seconds=probe)
            )
        assert lazy.trimmed == eager.trimmed


@given(steps=_steps)
def test_with_invalid_prices_among_them_the_lazy_history_finds_what_the_eager_one_finds(steps):
    _run(steps, maxlen=1000)  # no trimming: it counts entries not yet decoded (see the module)


@given(steps=_steps.map(lambda steps: [(s, True, d, p) for s, _, d, p in steps]), maxlen=st.integers(1, 30))
def test_with_valid_prices_it_trims_as_the_eager_history_does(steps, maxlen):
    _run(steps, maxlen)


def test_a_price_is_decoded_only_when_looked_at_and_only_once():
    payloads = _Payloads()
    lazy: LazyPriceHistory[int] = LazyPriceHistory(payloads.decode)
    for serial in range(100):
        payloads.ticks[serial] = _tick(serial, serial)
        lazy.append(micros(T0 + timedelta(seconds=serial)), serial)
    assert payloads.decoded == 0
    probe = micros(T0 + timedelta(seconds=41, milliseconds=500))
    assert lazy.at_or_after(probe) == _tick(42, 42)
    assert lazy.at_or_after(probe) == _tick(42, 42)
    assert payloads.decoded == 1


def test_an_invalid_price_at_the_end_does_not_keep_out_a_valid_one_at_the_same_time():
    payloads = _Payloads()
    lazy: LazyPriceHistory[int] = LazyPriceHistory(payloads.decode)
    payloads.ticks[0] = _tick(5, 0)
    payloads.ticks[1] = None  # does not decode
    payloads.ticks[2] = _tick(9, 2)
    assert lazy.append(micros(T0 + timedelta(seconds=5)), 0)
    assert lazy.append(micros(T0 + timedelta(seconds=9)), 1)
    assert lazy.append(micros(T0 + timedelta(seconds=9)), 2)  # the invalid one at 9 s is found out and removed
    assert lazy.last() == _tick(9, 2)
    assert len(lazy) == 2


@given(st.datetimes(timezones=st.just(UTC)), st.datetimes(timezones=st.just(UTC)))
def test_micros_is_exact_and_keeps_the_order_of_times(a, b):
    assert datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros(a)) == a
    assert (micros(a) < micros(b)) == (a < b)
