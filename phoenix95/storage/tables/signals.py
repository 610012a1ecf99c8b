"""The `signals` table: one row per analysed signal, and its execution status as the verdict and
the order come in."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, TypedDict

import orjson

from phoenix95.agents.ports import SignalAnalyzed
from phoenix95.storage.postgres import PgWrite, Statement
from phoenix95.storage.tables.common import dumps, row_params, table_upsert


class SignalRow(TypedDict):
    signal_id: str
    symbol: str
    action: str
    price: Decimal
    confidence: Decimal
    strategy: str
    timeframe: str
    rsi: Decimal | None
    macd: Decimal | None
    volume: Decimal | None
    source: str
    source_timestamp: datetime | None
    received_at: datetime
    processed_at: datetime
    phoenix95_score: Decimal
    final_confidence: Decimal
    quality_score: Decimal
    analysis_type: str
    raw_data: str | None
    analysis_data: str


SIGNAL = table_upsert(
    "signal",
    "signals",
    SignalRow,
    constants={"validation_status": "'valid'", "analysis_status": "'completed'"},
    order=10,
)

#: A signal's execution status: rejected (by the verdict or the order) or executed (filled).
SIGNAL_STATUS = Statement(
    "signal_status",
    """UPDATE signals SET execution_status = %(status)s, execution_data = %(data)s
       WHERE signal_id = %(signal_id)s AND execution_status IS DISTINCT FROM %(status)s""",
    order=90,
)


def signal_row(fact: SignalAnalyzed) -> SignalRow:
    s, a = fact.signal, fact.analysis
    analysis_data = {
        "event_id": a.event_id,
        "base_score": str(a.base_score),
        "adjustments": [
            {"code": adj.code, "delta": format(adj.delta, "f"), "detail": adj.detail} for adj in a.adjustments
        ],
    }
    return {
        "signal_id": s.signal_id,
        "symbol": s.symbol,
        "action": s.action,
        "price": s.price,
        "confidence": s.confidence,
        "strategy": s.strategy,
        "timeframe": s.timeframe,
        "rsi": s.rsi,
        "macd": s.macd,
        "volume": s.volume,
        "source": s.source,
        "source_timestamp": s.source_timestamp,
        "received_at": s.ts_ingest,
        "processed_at": a.ts_ingest,
        "phoenix95_score": a.phoenix95_score,
        "final_confidence": a.final_confidence,
        "quality_score": a.quality_score,
        "analysis_type": a.analysis_type,
        "raw_data": _raw_json(s.raw),
        "analysis_data": dumps(analysis_data),
    }


signal_params = row_params(SIGNAL, signal_row)


def signal_writes(fact: SignalAnalyzed) -> list[PgWrite]:
    # built on first use, while COPY streams the batch (see PgWrite)
    return [PgWrite.of(SIGNAL, signal_params, fact)]


def status_write(signal_id: str, status: str, data: dict[str, Any]) -> PgWrite:
    return PgWrite(SIGNAL_STATUS, {"status": status, "data": dumps(data), "signal_id": signal_id})


def _raw_json(raw: str | None) -> str | None:
    """A signal's `raw` copy for its JSONB column: JSON text goes through as it is (no parse and
    re-dump); text that is not JSON (another producer's free-form payload) is kept, wrapped,
    instead of failing the row."""
    if not raw:
        return None
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return dumps({"text": raw})
    return raw
