"""Analysis stage: p95.signals -> Phoenix-95 score -> p95.analysis (and the signals row)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from phoenix95.agents.base import Stage, dead_letter
from phoenix95.agents.ports import InputRecord, Outcome, SignalAnalyzed
from phoenix95.domain import ids
from phoenix95.domain.scoring import ScoringInput, score
from phoenix95.domain.values import side_of
from phoenix95.schemas.codec import Codec, DecodeError, Reason
from phoenix95.schemas.envelope import utc_now
from phoenix95.schemas.messages import Analysis, ScoreAdjustment, Signal
from phoenix95.streams import topics

#: signal ids -> the ts_ingest each was first recorded with (to tell a re-delivery from a duplicate).
SeenSignals = Callable[[Sequence[str]], Awaitable[dict[str, object]]]


class AnalysisStage(Stage):
    name = "analysis"
    inputs = (topics.SIGNALS,)

    def __init__(self, codec: Codec, known_symbols: frozenset[str], seen_signals: SeenSignals):
        self.codec = codec
        self.known_symbols = known_symbols
        self.seen_signals = seen_signals

    async def process(self, records: Sequence[InputRecord]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        decoded: list[tuple[InputRecord, Signal]] = []
        for record in records:
            try:
                signal = self.codec.decode_signal(
                    record.value,
                    headers=record.headers,
                    fallback_id=ids.derive("json-signal", record.topic, record.partition, record.offset),
                    ingest_time=record.timestamp,
                )
            except DecodeError as error:
                outcomes.append(
                    Outcome(record, dead_letter=dead_letter(self.name, record, error.reason, error.message))
                )
                continue
            if signal.symbol not in self.known_symbols:
                outcomes.append(
                    Outcome(
                        record,
                        dead_letter=dead_letter(
                            self.name,
                            record,
                            Reason.UNKNOWN_SYMBOL,
                            f"{signal.symbol} has no leverage brackets or symbol rules; add it to the configuration",
                            correlation_id=signal.signal_id,
                        ),
                    )
                )
                continue
            decoded.append((record, signal))
        seen = await self.seen_signals([s.signal_id for _, s in decoded]) if decoded else {}
        batch_first: dict[str, object] = {}
        for record, signal in decoded:
            first = seen.get(signal.signal_id, batch_first.get(signal.signal_id))
            if first is not None and first != signal.ts_ingest:
                outcomes.append(
                    Outcome(
                        record,
                        dead_letter=dead_letter(
                            self.name,
                            record,
                            Reason.DUPLICATE,
                            f"signal id {signal.signal_id} was already published at {first}; this is a different publication",
                            correlation_id=signal.signal_id,
                        ),
                    )
                )
                continue
            batch_first.setdefault(signal.signal_id, signal.ts_ingest)
            analysis = analyze(signal)
            outcomes.append(Outcome(record, produce=[analysis], persist=[SignalAnalyzed(signal, analysis)]))
        return outcomes


def analyze(signal: Signal, *, producer: str = "analysis") -> Analysis:
    """The Phoenix-95 analysis of a signal (also used by replays and `p95 risk quote`)."""
    side = side_of(signal.action)
    result = score(
        ScoringInput(side=side, confidence=signal.confidence, rsi=signal.rsi, macd=signal.macd, volume=signal.volume)
    )
    return Analysis.trusted(
        event_id=ids.analysis_id(signal.event_id),
        correlation_id=signal.signal_id,
        causation_id=signal.event_id,
        ts_event=signal.ts_event,
        ts_ingest=utc_now(),
        schema_version=Analysis.SCHEMA_VERSION,
        producer=producer,
        signal_id=signal.signal_id,
        symbol=signal.symbol,
        action=signal.action,
        side=side,
        price=signal.price,
        confidence=signal.confidence,
        strategy=signal.strategy,
        timeframe=signal.timeframe,
        phoenix95_score=result.phoenix95_score,
        final_confidence=result.final_confidence,
        quality_score=result.quality_score,
        base_score=result.base_score,
        analysis_type=result.analysis_type,
        adjustments=tuple(
            ScoreAdjustment.model_construct(code=a.code, delta=a.delta, detail=a.detail) for a in result.adjustments
        ),
    )
