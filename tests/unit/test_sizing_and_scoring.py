"""Phoenix-95 scoring and fractional-Kelly sizing."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import assume, given
from hypothesis import strategies as st

from phoenix95.domain.scoring import ScoringInput, score
from phoenix95.domain.sizing import kelly, size_position

probabilities = st.decimals(min_value=Decimal("0"), max_value=Decimal("1"), places=4)
distances = st.decimals(min_value=Decimal("0.001"), max_value=Decimal("0.2"), places=4)
equities = st.decimals(min_value=Decimal("100"), max_value=Decimal("1000000"), places=2)


def size(p: Decimal, stop: Decimal, target: Decimal = Decimal("0.02"), equity: Decimal = Decimal(10000)):
    return size_position(
        win_probability=p,
        stop_distance=stop,
        target_distance=target,
        equity=equity,
        entry_price=Decimal("100"),
        leverage=20,
        kelly_fraction=Decimal("0.2"),
        max_position_fraction=Decimal("0.15"),
        step_size=Decimal("0.001"),
    )


def test_seed_base_score_is_confidence_times_1_3_capped_at_one():
    assert score(ScoringInput(side="long", confidence=Decimal("0.5"))).phoenix95_score == Decimal("0.65")
    assert score(ScoringInput(side="long", confidence=Decimal("0.9"))).phoenix95_score == Decimal("1")


def test_rsi_overbought_lowers_the_score_of_a_long_and_says_why():
    result = score(ScoringInput(side="long", confidence=Decimal("0.5"), rsi=Decimal("85")))
    assert result.phoenix95_score == Decimal("0.5")
    assert [a.code for a in result.adjustments] == ["RSI_EXTREME_AGAINST"]


def test_macd_against_a_short_lowers_the_score():
    result = score(ScoringInput(side="short", confidence=Decimal("0.5"), macd=Decimal("0.3")))
    assert result.phoenix95_score == Decimal("0.60")
    assert result.adjustments[0].code == "MACD_AGAINST"


def test_quality_rewards_complete_and_agreeing_technicals():
    agreeing = score(
        ScoringInput(side="long", confidence=Decimal("0.5"), rsi=Decimal("25"), macd=Decimal("1"), volume=Decimal("10"))
    )
    bare = score(ScoringInput(side="long", confidence=Decimal("0.5")))
    assert agreeing.quality_score == Decimal("1.0000")
    assert bare.quality_score == Decimal("0.4000")


@given(
    side=st.sampled_from(["long", "short"]),
    confidence=probabilities,
    rsi=st.none() | st.decimals(min_value=0, max_value=100, places=2),
    macd=st.none() | st.decimals(min_value=-1000, max_value=1000, places=4),
    volume=st.none() | st.decimals(min_value=0, max_value=10**9, places=2),
)
def test_score_stays_within_bounds_and_adjustments_are_bounded(side, confidence, rsi, macd, volume):
    result = score(ScoringInput(side=side, confidence=confidence, rsi=rsi, macd=macd, volume=volume))
    assert Decimal(0) <= result.phoenix95_score <= Decimal(1)
    assert Decimal(0) <= result.quality_score <= Decimal(1)
    assert result.phoenix95_score - result.base_score >= Decimal("-0.25")
    assert result.phoenix95_score - result.base_score <= Decimal("0.10")


def test_kelly_with_symmetric_stop_and_target_needs_more_than_even_odds():
    assert kelly(Decimal("0.5"), Decimal(1)) == Decimal(0)
    assert kelly(Decimal("0.6"), Decimal(1)) == Decimal("0.2")
    assert size(Decimal("0.5"), Decimal("0.02")).quantity == 0


@given(p=probabilities, stop=distances, equity=equities)
def test_size_never_exceeds_the_max_position_fraction(p, stop, equity):
    sized = size(p, stop, equity=equity)
    assert sized.position_fraction <= Decimal("0.15")
    assert sized.margin <= equity * Decimal("0.15")
    assert sized.quantity >= 0


@given(p=probabilities, tight=distances, wide=distances)
def test_a_wider_stop_never_increases_size(p, tight, wide):
    # Kelly sizes on the payoff ratio b = target / stop distance: a wider stop lowers b and with it
    # the size. (The wording "a tighter stop never increases size" inverts this for the very
    # rule it specifies: with b = TP/SL a tighter stop raises b; see the closing note.)
    assume(tight <= wide)
    assert size(p, wide).quantity <= size(p, tight).quantity


@given(low=probabilities, high=probabilities, stop=distances)
def test_lower_confidence_never_increases_size(low, high, stop):
    assume(low <= high)
    assert size(low, stop).quantity <= size(high, stop).quantity
