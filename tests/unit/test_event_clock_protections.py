"""The protections on the event clock (replays, the demo): the figures of the closes before a
decision, in canonical order, whatever order the closes were learned in; halts and locks in event time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix95.agents.risk import RiskStage
from phoenix95.connectors.exchange.brackets import bundled_brackets
from phoenix95.domain.config import TradingConfig
from phoenix95.domain.protections import ClosedFact, EventClockProtections, ProtectionConfig, trips_of
from phoenix95.domain.risk import RiskReason
from phoenix95.domain.trading_state import TradingState
from phoenix95.schemas.codec import Codec
from phoenix95.schemas.convert import analyze
from tests import factories

T0 = datetime(2021, 11, 15, 9, 0, tzinfo=UTC)
EQUITY = Decimal(10000)


def close(minutes: float, pnl: str, *, symbol: str = "XRPUSDT", reason: str = "stop_loss", pid: str = "") -> ClosedFact:
    at = T0 + timedelta(minutes=minutes)
    return ClosedFact(at, symbol, pid or f"p-{symbol}-{minutes}", Decimal(pnl), reason)


def protections(**changes) -> EventClockProtections:
    return EventClockProtections(ProtectionConfig(**changes), EQUITY)


def test_a_daily_loss_halts_until_the_next_utc_day_and_only_for_decisions_after_the_close():
    guard = protections(max_drawdown_pct=Decimal(0), stoploss_guard_count=0)
    guard.learn([close(0, "-600"), close(30, "-500")])
    at_close = T0 + timedelta(minutes=30)
    guard.advance(at_close)
    assert guard.halt_at(at_close) is None  # the close at the decision's own time is not before it
    later = at_close + timedelta(minutes=1)
    guard.advance(later)
    halt = guard.halt_at(later)
    assert halt is not None and halt.reason == "DAILY_LOSS_LIMIT" and halt.figures["day_loss_pct"] == "11.0000"
    assert guard.halt_at(datetime(2021, 11, 15, 23, 59, tzinfo=UTC)) is not None
    assert guard.halt_at(datetime(2021, 11, 16, 0, 0, tzinfo=UTC)) is None  # a new UTC day trades again


def test_a_max_drawdown_halts_for_the_rest_of_the_run_and_trips_once():
    guard = protections(daily_loss_limit_pct=Decimal(0), stoploss_guard_count=0)
    guard.learn([close(0, "2000", reason="take_profit"), close(60 * 30, "-3000"), close(60 * 80, "-100")])
    guard.advance(T0 + timedelta(days=30))
    assert [t.reason for t in guard.trips] == ["MAX_DRAWDOWN"]
    assert guard.trips[0].figures["peak_equity"] == "12000"
    assert guard.halt_at(T0 + timedelta(days=29)) is not None


def test_the_stoploss_guard_locks_the_symbol_until_its_lock_ends_and_other_symbols_stay_open():
    guard = protections(daily_loss_limit_pct=Decimal(0), max_drawdown_pct=Decimal(0), stoploss_guard_count=3)
    guard.learn([close(m, "-1") for m in (0, 10, 20)] + [close(5, "-1", symbol="BTCUSDT")])
    at = T0 + timedelta(minutes=21)
    guard.advance(at)
    locks = guard.locks_at(at)
    assert set(locks) == {"XRPUSDT"} and locks["XRPUSDT"].reason is RiskReason.STOPLOSS_GUARD
    assert locks["XRPUSDT"].until == T0 + timedelta(minutes=80)
    assert guard.locks_at(T0 + timedelta(minutes=80)) == {}
    assert guard.halt_at(at) is None


def test_a_close_learned_late_that_sorts_first_rebuilds_the_figures_in_canonical_order():
    # an expiry is found only at the symbol's next price: learned after a later close was counted
    guard = protections(stoploss_guard_count=2, stoploss_guard_window=timedelta(minutes=10))
    guard.learn([close(8, "-1", pid="b")])
    guard.advance(T0 + timedelta(minutes=9))
    assert guard.trips == []
    guard.learn([close(1, "-1", reason="expired", pid="a"), close(2, "-1", pid="c")])
    guard.advance(T0 + timedelta(minutes=9))
    assert [t.at for t in guard.trips] == [T0 + timedelta(minutes=8)]  # c then b: two within 10 min


facts = st.lists(
    st.builds(
        close,
        st.integers(0, 3 * 24 * 60),
        st.sampled_from(["-450", "-120", "-35.5", "80", "600"]),
        symbol=st.sampled_from(["XRPUSDT", "BTCUSDT"]),
        reason=st.sampled_from(["stop_loss", "take_profit", "expired", "liquidation"]),
    ),
    max_size=40,
    unique_by=lambda f: f.position_id,
)


@settings(max_examples=150, deadline=None)
@given(facts, st.randoms(use_true_random=False), st.lists(st.integers(0, 3 * 24 * 60), max_size=8))
def test_the_trips_do_not_depend_on_the_order_or_the_batches_the_closes_are_learned_in(closes, rnd, decisions):
    config = ProtectionConfig(stoploss_guard_count=3, cooldown=timedelta(minutes=15))
    shuffled = list(closes)
    rnd.shuffle(shuffled)
    guard = EventClockProtections(config, EQUITY)
    cut = 0
    for minute in sorted(decisions):  # decisions in event time, closes learned in any order between them
        step = rnd.randint(0, len(shuffled) - cut)
        guard.learn(shuffled[cut : cut + step])
        cut += step
        guard.advance(T0 + timedelta(minutes=minute))
    guard.learn(shuffled[cut:])
    guard.advance(T0 + timedelta(days=10))
    assert guard.trips == trips_of(closes, config, EQUITY)


def test_protections_all_off_trip_nothing():
    off = ProtectionConfig(daily_loss_limit_pct=Decimal(0), max_drawdown_pct=Decimal(0), stoploss_guard_count=0)
    assert not EventClockProtections(off, EQUITY).enabled
    assert trips_of([close(0, "-9000")], off, EQUITY) == []


# -- the risk stage on the event clock: the figures survive a restart --------------------------------


class RestartedPortfolio:
    """What PostgreSQL holds after a restart: no open position, two closes (one after the signal)."""

    def __init__(self, closed: list[ClosedFact]):
        self.closed = closed

    async def snapshot(self):
        raise AssertionError("the event clock decides on its book, not on a snapshot")

    async def verdicts(self, verdict_ids):
        return {}

    async def recent(self, window):
        return [], []

    async def book_state(self):
        return [], [], sum((f.realized_pnl for f in self.closed), Decimal(0))

    async def closed_positions(self):
        return self.closed

    async def trading_state(self):
        return TradingState.ACTIVE


def decide_after_restart(closed: list[ClosedFact], at: datetime):
    stage = RiskStage(
        Codec(),
        TradingConfig(),
        bundled_brackets(),
        RestartedPortfolio(closed),
        clock="event",
        protections=ProtectionConfig(),
    )
    asyncio.run(stage.start())
    analysis = analyze(factories.signal(action="buy", confidence="0.92", price="1.1812", at=at))
    return stage.desk.decide_on_book(analysis, TradingState.ACTIVE)


def test_after_a_restart_the_event_clock_risk_stage_still_halts_on_the_closes_recorded_before_it():
    at = T0 + timedelta(days=2)
    crash = [close(0, "-3000", pid="big-loss")]  # a 30 % drawdown, recorded before the restart
    verdict = decide_after_restart(crash, at)
    assert verdict.decision == "REJECTED" and "TRADING_HALTED" in verdict.reasons
    # the same loss closing after the signal's time does not halt a decision before it
    later = [close(60 * 24 * 3, "-3000", pid="big-loss")]
    assert "TRADING_HALTED" not in decide_after_restart(later, at).reasons
