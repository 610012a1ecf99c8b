"""Replay speed: the in-process engine on a price-heavy synthetic history (next to the same engine
applying every tick to every position, its eager baseline), and the Kafka mode on the bundled data."""

from __future__ import annotations

import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from phoenix95.bench.pipeline import SYMBOLS
from phoenix95.connectors.exchange.brackets import bundled_brackets
from phoenix95.connectors.market_data import GbmFeed
from phoenix95.domain import book as book_module
from phoenix95.domain.config import TradingConfig
from phoenix95.replay.engine import InProcessEngine, merged
from phoenix95.schemas.signal_input import build_signal


def dataset(prices_per_symbol: int, signals: int) -> tuple[list[Any], list[Any]]:
    start = datetime(2023, 1, 1, tzinfo=UTC)
    ticks = []
    for symbol, (first, tick) in SYMBOLS.items():
        ticks.extend(
            GbmFeed(symbol, first, start, interval=timedelta(minutes=1), tick_size=tick, seed=21).ticks(
                prices_per_symbol
            )
        )
    ticks.sort(key=lambda t: (t.time, t.symbol))
    rng = random.Random(21)
    span = ticks[-1].time - ticks[0].time
    batch = []
    for i in range(signals):
        at = ticks[0].time + span * (i + 0.5) / signals
        symbol = list(SYMBOLS)[i % len(SYMBOLS)]
        batch.append(
            build_signal(
                {
                    "symbol": symbol,
                    "action": rng.choice(["buy", "sell"]),
                    "price": str(SYMBOLS[symbol][0]),
                    "confidence": rng.choice(["0.3", "0.85", "0.95"]),
                    "strategy": f"s{i % 7}",
                    "source_timestamp": at.isoformat(),
                },
                producer="bench",
                signal_id=str(uuid.uuid4()),
            )
        )
    return batch, ticks


def _run(signals: list[Any], ticks: list[Any]) -> tuple[float, int, str]:
    from phoenix95.replay.digest import digest, lines_of

    engine = InProcessEngine(
        TradingConfig(max_open_positions=1_000_000, max_position_fraction=Decimal("0.001")),
        bundled_brackets(),
        keep_position_events=False,
    )
    result = engine.run(merged(signals, ticks), already_sorted=True)
    return result.events / result.elapsed_s, len(result.closed), digest(lines_of(result.orders, result.closed))


def inprocess(*, quick: bool) -> dict[str, Any]:
    per_symbol = 25_000 if quick else 100_000
    signals, ticks = dataset(per_symbol, per_symbol // 50)
    started = time.perf_counter()
    rate, trades, fast_digest = _run(signals, ticks)
    wall = time.perf_counter() - started
    # The baseline: the same engine applying every price to every open position (no guard).
    original = book_module._Guard.lets_through
    book_module._Guard.lets_through = lambda self, tick: False  # type: ignore[method-assign]
    try:
        eager_rate, _, eager_digest = _run(signals, ticks)
    finally:
        book_module._Guard.lets_through = original  # type: ignore[method-assign]
    return {
        "value": round(rate),
        "unit": "events/s",
        "baseline": {"eager_every_tick_events_per_s": round(eager_rate)},
        "ratio": round(rate / eager_rate, 2) if eager_rate else None,
        "events": len(signals) + len(ticks),
        "signals": len(signals),
        "trades": trades,
        "same_digest_as_baseline": fast_digest == eager_digest,
        "wall_s": round(wall, 2),
    }


#: The quick run's share of the bundled sample: its first signals, with the candles from an hour
#: before the first to a day after the last (so their positions can close).
QUICK_SIGNALS = 60


def quick_inputs(directory: Path, signals: int = QUICK_SIGNALS) -> tuple[Path, Path]:
    """A signals file and a candle file with the first `signals` signals of the bundled sample and
    the candles around them."""
    from phoenix95.connectors.market_data import read_candles
    from phoenix95.replay import runner, sources

    lines = [line for line in runner.sample_signals_path().read_text().splitlines() if line.strip()][:signals]
    signals_path = directory / "quick-signals.jsonl"
    signals_path.write_text("\n".join(lines) + "\n")
    chosen, _bad = sources.read_signals_file(signals_path)
    first, last = chosen[0].ts_event - timedelta(hours=1), chosen[-1].ts_event + timedelta(days=1)
    prices_path = directory / "XRPUSDT-5m-quick.csv"
    with prices_path.open("w") as out:
        out.write("date,open,high,low,close,volume\n")
        for c in read_candles(runner.DEFAULT_PRICES):
            if first <= c.time <= last:
                out.write(
                    f"{c.time.isoformat()},{c.open},{c.high},{c.low},{c.close},{c.volume if c.volume is not None else ''}\n"
                )
    return signals_path, prices_path


def kafka(base: Any, *, quick: bool = False) -> dict[str, Any]:
    """The bundled sample through the real workers, next to the same input in-process (quick: its
    first signals and the candles around them)."""
    import asyncio
    import tempfile

    from phoenix95.replay import runner
    from phoenix95.replay.kafka_mode import clean

    with tempfile.TemporaryDirectory(prefix="p95-bench-replay-") as directory:
        if quick:
            signals_path, prices_path = quick_inputs(Path(directory))
            inputs: dict[str, Any] = {"signals_file": str(signals_path), "prices_files": [str(prices_path)]}
        else:
            inputs = {"signals_file": runner.SAMPLE_SIGNALS}
        kafka_summary = runner.run(runner.ReplayRequest(mode="kafka", **inputs), base=base)
        inprocess_summary = runner.run(runner.ReplayRequest(mode="inprocess", **inputs), base=base)
    try:
        asyncio.run(clean(base, kafka_summary["run_id"]))
    except Exception:
        pass
    return {
        "value": kafka_summary["events_per_s"],
        "unit": "events/s",
        "baseline": {"inprocess_events_per_s": inprocess_summary["events_per_s"]},
        "ratio": round(kafka_summary["events_per_s"] / inprocess_summary["events_per_s"], 4),
        "events": kafka_summary["events"],
        "signals": kafka_summary["signals"],
        "same_digest_as_inprocess": kafka_summary["digest"] == inprocess_summary["digest"],
        "elapsed_s": kafka_summary["elapsed_s"],
        # not in the figure: starting the four workers until each joined its group
        "workers_startup_s": kafka_summary.get("startup_s"),
        "events_per_s_with_startup": round(
            kafka_summary["events"] / (kafka_summary["elapsed_s"] + (kafka_summary.get("startup_s") or 0)), 1
        ),
    }
