"""Analysis stage: p95.signals -> Phoenix-95 score -> p95.analysis (and the signals row)."""

from __future__ import annotations

from collections.abc import Sequence

from phoenix95.agents.base import Stage
from phoenix95.agents.ports import InputRecord, Outcome, SeenSignals, SignalAnalyzed
from phoenix95.domain import ids
from phoenix95.schemas.codec import Codec, DecodeError, Reason
from phoenix95.schemas.convert import analyze, dead_letter
from phoenix95.schemas.messages import Signal
from phoenix95.streams.stages import ANALYSIS


class AnalysisStage(Stage):
    name = ANALYSIS.name
    inputs = ANALYSIS.inputs

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
