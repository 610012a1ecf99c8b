"""Scenarios measured by the stand-alone benchmark scripts in `benchmarks/` (they run their own
client processes): the tap next to kcat, and the webhook's acknowledgement latency."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from phoenix95.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _script(name: str) -> Path | None:
    path = ROOT / "benchmarks" / name
    return path if path.is_file() else None


def _last_json(output: str) -> dict[str, Any]:
    for line in reversed(output.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("the benchmark printed no JSON summary")


def run(name: str, settings: Settings, *, quick: bool, messages: int | None = None) -> dict[str, Any]:
    if name == "tap":
        script = _script("tap_bench.py")
        args = [
            "--json",
            "--kafka",
            settings.kafka.bootstrap_servers,
            "--messages",
            str(messages or (30000 if quick else 200000)),
            "--rounds",
            "1" if quick else "3",
        ]
    else:
        script = _script("webhook_bench.py")
        args = [
            "--kafka",
            settings.kafka.bootstrap_servers,
            "--redis",
            settings.redis_url(),
            "--rate",
            "500",
            "--duration",
            "6" if quick else "15",
        ]
    if script is None:
        return {"value": None, "skipped": "run from a source checkout: the script lives in benchmarks/"}
    result = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=900, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"{script.name} failed: {(result.stderr or result.stdout)[-800:]}")
    return _normalise(name, _last_json(result.stdout))


def _normalise(name: str, raw: dict[str, Any]) -> dict[str, Any]:
    """Give the scripts' summaries the common shape: value, unit, baseline, ratio."""
    if "value" in raw and "unit" in raw:
        return raw
    if name == "tap":
        rates, reading = raw.get("rates", {}), raw.get("reading_phase_rates", {})
        value = rates.get("p95 tap", {}).get("median")
        kcat = rates.get("kcat -J", {}).get("median")
        missing = raw.get("baseline_missing")
        return {
            "value": value,
            "unit": "msg/s (whole process, median; decoded to JSON lines, to /dev/null)",
            "reading_phase_msgs_per_s": reading.get("p95 tap", {}).get("median"),
            "baseline": None if missing else {"kcat -J": kcat},
            **({"baseline_missing": missing} if missing else {}),
            "jobs_1_msgs_per_s": rates.get("p95 tap --jobs 1", {}).get("median"),
            "ratio": round(value / kcat, 3) if value and kcat else None,
            "messages": raw.get("messages"),
            "cpu_us_per_message": raw.get("cpu_us_per_message"),
        }
    return {
        "value": raw.get("p99_ms"),
        "unit": "ms (p99 acknowledgement)",
        "p50_ms": raw.get("p50_ms"),
        "max_ms": raw.get("max_ms"),
        "rate": raw.get("rate"),
        "achieved_rate": raw.get("achieved_rate"),
        "requests": raw.get("requests"),
        "statuses": raw.get("statuses"),
        "messages_on_topic": raw.get("messages_on_topic"),
        "baseline": {
            "server_side_share_within": raw.get("server_ack"),
            "broker_confirm_share_within": raw.get("broker_confirm"),
        },
        "ratio": None,
    }


def optional_baseline(missing: str | None, measure: Callable[[], Any]) -> tuple[Any, str | None]:
    """An external baseline (Quix Streams, kcat) that may be absent here: (its figure, None), or
    (None, why it is missing); the scenario itself is measured either way and the run goes on."""
    if missing is not None:
        return None, missing
    return measure(), None
