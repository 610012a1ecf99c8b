"""The Phoenix-95 score.

Base (from the seed): ``min(confidence x 1.3, 1.0)``. The signal's technical fields then adjust it by a
bounded, documented rule; every adjustment is returned with a reason code:

====================  =========================================================  ========
code                  condition                                                  delta
====================  =========================================================  ========
RSI_EXTREME_AGAINST   long with RSI >= 80, or short with RSI <= 20                -0.15
RSI_AGAINST           long with 70 <= RSI < 80, or short with 20 < RSI <= 30      -0.10
RSI_SUPPORTS          long with RSI <= 30, or short with RSI >= 70                +0.05
MACD_AGAINST          long with MACD < 0, or short with MACD > 0                  -0.05
MACD_SUPPORTS         long with MACD > 0, or short with MACD < 0                  +0.03
VOLUME_ABSENT         volume given and equal to 0 (nothing traded)               -0.05
VOLUME_CONFIRMS       volume given and > 0                                        +0.02
====================  =========================================================  ========

The sum of the adjustments is clamped to [-0.25, +0.10] and the score to [0, 1].
``final_confidence`` is the adjusted score (it is the win probability used by sizing).
``quality_score`` says how much the technical fields back the signal:
``0.4 + 0.3 x completeness + 0.3 x agreement``, where completeness is the share of RSI, MACD and
volume that were given and agreement the share of the given ones that did not argue against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from phoenix95.domain.values import ONE, ZERO, Side, clamp

BASE_MULTIPLIER = Decimal("1.3")
MAX_PENALTY = Decimal("-0.25")
MAX_BONUS = Decimal("0.10")
ANALYSIS_TYPE = "PHOENIX_95_V1"
_SCORE_EXPONENT = Decimal("0.0001")


@dataclass(frozen=True)
class Adjustment:
    code: str
    delta: Decimal
    detail: str


@dataclass(frozen=True)
class ScoringInput:
    side: Side
    confidence: Decimal
    rsi: Decimal | None = None
    macd: Decimal | None = None
    volume: Decimal | None = None


@dataclass(frozen=True)
class Score:
    phoenix95_score: Decimal
    final_confidence: Decimal
    quality_score: Decimal
    base_score: Decimal
    adjustments: tuple[Adjustment, ...]
    analysis_type: str = ANALYSIS_TYPE


def base_score(confidence: Decimal) -> Decimal:
    return min(confidence * BASE_MULTIPLIER, ONE)


def _rsi_adjustment(side: Side, rsi: Decimal) -> Adjustment | None:
    if side == "long":
        if rsi >= 80:
            return Adjustment("RSI_EXTREME_AGAINST", Decimal("-0.15"), f"RSI {rsi} >= 80 against a long")
        if rsi >= 70:
            return Adjustment("RSI_AGAINST", Decimal("-0.10"), f"RSI {rsi} >= 70 against a long")
        if rsi <= 30:
            return Adjustment("RSI_SUPPORTS", Decimal("0.05"), f"RSI {rsi} <= 30 supports a long")
    else:
        if rsi <= 20:
            return Adjustment("RSI_EXTREME_AGAINST", Decimal("-0.15"), f"RSI {rsi} <= 20 against a short")
        if rsi <= 30:
            return Adjustment("RSI_AGAINST", Decimal("-0.10"), f"RSI {rsi} <= 30 against a short")
        if rsi >= 70:
            return Adjustment("RSI_SUPPORTS", Decimal("0.05"), f"RSI {rsi} >= 70 supports a short")
    return None


def _macd_adjustment(side: Side, macd: Decimal) -> Adjustment | None:
    if macd == 0:
        return None
    against = (macd < 0) if side == "long" else (macd > 0)
    if against:
        return Adjustment("MACD_AGAINST", Decimal("-0.05"), f"MACD {macd} against a {side}")
    return Adjustment("MACD_SUPPORTS", Decimal("0.03"), f"MACD {macd} supports a {side}")


def _volume_adjustment(volume: Decimal) -> Adjustment:
    if volume == 0:
        return Adjustment("VOLUME_ABSENT", Decimal("-0.05"), "volume 0: nothing traded")
    return Adjustment("VOLUME_CONFIRMS", Decimal("0.02"), f"volume {volume} > 0")


def score(signal: ScoringInput) -> Score:
    """Score a signal. Pure: the same input always gives the same score."""
    if not ZERO <= signal.confidence <= ONE:
        raise ValueError(f"confidence {signal.confidence} outside [0, 1]")
    base = base_score(signal.confidence)
    adjustments: list[Adjustment] = []
    given = 0
    contrary = 0
    if signal.rsi is not None:
        given += 1
        rsi_adjustment = _rsi_adjustment(signal.side, signal.rsi)
        if rsi_adjustment is not None:
            adjustments.append(rsi_adjustment)
            contrary += rsi_adjustment.delta < 0
    if signal.macd is not None:
        given += 1
        macd_adjustment = _macd_adjustment(signal.side, signal.macd)
        if macd_adjustment is not None:
            adjustments.append(macd_adjustment)
            contrary += macd_adjustment.delta < 0
    if signal.volume is not None:
        given += 1
        volume_adjustment = _volume_adjustment(signal.volume)
        adjustments.append(volume_adjustment)
        contrary += volume_adjustment.delta < 0
    total = clamp(sum((a.delta for a in adjustments), ZERO), MAX_PENALTY, MAX_BONUS)
    phoenix95 = clamp(base + total, ZERO, ONE).quantize(_SCORE_EXPONENT)
    completeness = Decimal(given) / 3
    agreement = (Decimal(given - contrary) / given) if given else ZERO
    quality = clamp(Decimal("0.4") + Decimal("0.3") * completeness + Decimal("0.3") * agreement, ZERO, ONE)
    return Score(
        phoenix95_score=phoenix95,
        final_confidence=phoenix95,
        quality_score=quality.quantize(_SCORE_EXPONENT),
        base_score=base.quantize(_SCORE_EXPONENT),
        adjustments=tuple(adjustments),
    )
