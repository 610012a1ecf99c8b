"""`p95 bench --profile`: the e2e scenario with py-spy attached to each stage worker.

For each stage it writes the collapsed stacks py-spy sampled (`<stage>.folded`), a flame graph of
them (`<stage>.svg`, rendered here from the folded stacks), and in `profile.json`: the worker's CPU
seconds over the measured window, the messages it consumed in that window (its input topics' growth),
so CPU µs per consumed message, and the share of the sampled time per area (Faust, the Kafka client,
the Avro codec, pydantic, PostgreSQL, Redis, the time series, domain logic, ...), attributed to the
innermost frame of a known area. py-spy samples without pausing the process (`--nonblocking`) and
without idle stacks, so the shares are of the time the worker was running Python.
"""

from __future__ import annotations

import asyncio
import gzip
import html
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from phoenix95.settings import Settings

#: (area, substrings of a frame's file or function) — the first area whose pattern matches the
#: innermost frame that matches any wins; a sample with no matching frame is "other".
AREAS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("postgres client (psycopg)", ("psycopg",)),
    ("redis client", ("redis/", "redis\\", "hiredis")),
    ("time-series client", ("influxdb_client", "storage/timeseries")),
    ("avro codec", ("fastavro", "schemas/codec", "schemas/registry")),
    ("pydantic", ("pydantic",)),
    ("kafka client (aiokafka)", ("aiokafka", "kafka/")),
    ("faust/mode machinery", ("faust/", "mode/")),
    ("metrics (prometheus)", ("prometheus_client", "streams/metrics", "system_metrics")),
    ("storage rows/sink", ("phoenix95/storage", "storage/")),
    ("domain logic", ("phoenix95/domain", "domain/")),
    ("stage code", ("phoenix95/agents", "agents/")),
    ("logging", ("logging/",)),
    ("asyncio loop", ("asyncio/", "uvloop", "selectors")),
)


#: Leaf frames that are a thread waiting, not working: py-spy's --nonblocking mode cannot always tell an
#: idle thread (blocked in epoll) from a running one, so they are counted apart.
IDLE_LEAVES = ("EpollSelector.select (selectors.py:468)", "select (selectors.py:468)")


def area_of(stack: list[str]) -> str:
    if stack and any(stack[-1].startswith(leaf) for leaf in IDLE_LEAVES):
        return "idle (epoll wait)"
    for frame in reversed(stack):
        for area, patterns in AREAS:
            if any(p in frame for p in patterns):
                return area
    return "other"


def read_folded(path: Path) -> Counter[str]:
    stacks: Counter[str] = Counter()
    if not path.exists():
        return stacks
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    for line in raw.decode(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] += int(count)
    return stacks


def areas(stacks: Counter[str]) -> dict[str, float]:
    """Share of the busy samples per area, largest first (idle samples excluded)."""
    found: Counter[str] = Counter()
    for stack, count in stacks.items():
        found[area_of(stack.split(";"))] += count
    found.pop("idle (epoll wait)", None)
    total = sum(found.values())
    return {area: round(count / total, 3) for area, count in found.most_common()} if total else {}


def idle_share(stacks: Counter[str]) -> float:
    total = sum(stacks.values())
    idle = sum(c for s, c in stacks.items() if area_of(s.split(";")) == "idle (epoll wait)")
    return round(idle / total, 3) if total else 0.0


def consumer_thread_share(stacks: Counter[str]) -> float:
    """Share of the busy samples in a thread of its own (Faust runs the Kafka consumer in one)."""
    busy = {s: c for s, c in stacks.items() if area_of(s.split(";")) != "idle (epoll wait)"}
    total = sum(busy.values())
    threaded = sum(c for s, c in busy.items() if s.startswith("Thread._bootstrap"))
    return round(threaded / total, 3) if total else 0.0


def top_frames(stacks: Counter[str], limit: int = 10) -> list[tuple[str, float]]:
    """Our own functions (phoenix95/, not the CLI) by inclusive share of the busy samples."""
    busy = {s: c for s, c in stacks.items() if area_of(s.split(";")) != "idle (epoll wait)"}
    total = sum(busy.values())
    inclusive: Counter[str] = Counter()
    for stack, count in busy.items():
        for frame in set(stack.split(";")):
            if "phoenix95/" in frame and not any(x in frame for x in ("phoenix95/cli/", "streams/app.py", "__main__")):
                inclusive[frame] += count
    return [(frame, round(count / total, 3)) for frame, count in inclusive.most_common(limit)] if total else []


def flame_svg(stacks: Counter[str], title: str, width: int = 1200, row: int = 16) -> str:
    """A flame graph (root at the bottom) of folded stacks, as a self-contained SVG."""
    tree: dict[str, Any] = {"n": 0, "c": {}}
    for stack, count in stacks.items():
        node = tree
        node["n"] += count
        for frame in stack.split(";"):
            node = node["c"].setdefault(frame, {"n": 0, "c": {}})
            node["n"] += count
    total = tree["n"] or 1

    def depth(node: dict[str, Any]) -> int:
        return 1 + max((depth(c) for c in node["c"].values()), default=0)

    levels = depth(tree)
    height = (levels + 2) * row
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" '
        f'font-size="11"><rect width="100%" height="100%" fill="#fff"/>'
        f'<text x="4" y="12">{html.escape(title)} ({total} samples)</text>'
    ]

    def draw(node: dict[str, Any], name: str, x: float, level: int) -> None:
        w = node["n"] / total * width
        if w < 0.5:
            return
        y = height - (level + 1) * row
        if level > 0:
            hue = 10 + (hash(name) % 50)
            label = html.escape(name)
            share = f"{node['n'] / total:.1%}"
            parts.append(
                f"<g><title>{label} ({node['n']} samples, {share})</title>"
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 1}" fill="hsl({hue},85%,60%)"/>'
            )
            if w > 40:
                chars = int(w / 7)
                text = html.escape(name[:chars] + ("…" if len(name) > chars else ""))
                parts.append(f'<text x="{x + 2:.1f}" y="{y + row - 4}">{text}</text>')
            parts.append("</g>")
        for child_name, child in sorted(node["c"].items()):
            draw(child, child_name, x, level + 1)
            x += child["n"] / total * width

    draw(tree, "all", 0.0, 0)
    parts.append("</svg>")
    return "\n".join(parts)


def py_spy() -> str | None:
    found = shutil.which("py-spy")
    if found:
        return found
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else None


def record(spy: str, pid: int, output: Path, *, rate: int = 97, stderr: Any = subprocess.DEVNULL) -> subprocess.Popen:
    """py-spy sampling `pid` at `rate` Hz without pausing it; its folded stacks go to `output`."""
    return subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--rate",
            str(rate),
            "--nonblocking",
            "--output",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )


def run(base: Settings, *, signals: int, out_dir: Path, rate: int = 97) -> dict[str, Any]:
    """The e2e scenario with py-spy on every stage worker; writes the flame graphs into out_dir."""
    import psutil

    from phoenix95.bench.pipeline import BenchPipeline, event_time_workload
    from phoenix95.connectors.kafka_admin import message_counts
    from phoenix95.schemas.messages import Signal
    from phoenix95.streams import stages as registry

    spy = py_spy()
    if spy is None:
        raise RuntimeError("py-spy is not installed (pip install 'phoenix95[bench]')")
    out_dir.mkdir(parents=True, exist_ok=True)
    with BenchPipeline(base, {"P95_RISK__CLOCK": "event"}) as pipeline:
        asyncio.run(pipeline.warm_up())
        bootstrap = pipeline.settings.kafka.bootstrap_servers
        inputs = {
            stage: [pipeline.topics.name(t) for t in registry.spec(stage).inputs] for stage in pipeline.workers.stages
        }
        every_input = sorted({t for names in inputs.values() for t in names})
        before = asyncio.run(message_counts(bootstrap, every_input))
        processes = {stage: psutil.Process(pipeline.workers.pid(stage)) for stage in pipeline.workers.stages}
        spies = {
            stage: record(spy, process.pid, out_dir / f"{stage}.folded", rate=rate, stderr=subprocess.PIPE)
            for stage, process in processes.items()
        }
        time.sleep(1.0)  # py-spy attached
        idle_from = {stage: sum(p.cpu_times()[:2]) for stage, p in processes.items()}
        time.sleep(3.0)
        idle_cores = {stage: (sum(p.cpu_times()[:2]) - idle_from[stage]) / 3.0 for stage, p in processes.items()}
        cpu_before = {stage: sum(p.cpu_times()[:2]) for stage, p in processes.items()}
        start = datetime(2022, 1, 1, tzinfo=UTC)
        batch, prices = event_time_workload(signals, pipeline.settings.namespace, start=start)
        timeline = sorted([*batch, *prices], key=lambda e: (e.ts_event, 0 if isinstance(e, Signal) else 1))
        started = time.perf_counter()
        asyncio.run(pipeline.publish(timeline))
        asyncio.run(pipeline.until_done(signals + 1, 900.0))
        elapsed = time.perf_counter() - started
        cpu_after = {stage: sum(p.cpu_times()[:2]) for stage, p in processes.items()}
        after = asyncio.run(message_counts(bootstrap, every_input))
        for process in spies.values():
            process.send_signal(signal.SIGINT)
        errors = {}
        for stage, process in spies.items():
            try:
                _, err = process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                _, err = process.communicate()
            if process.returncode not in (0, -signal.SIGINT) and not (out_dir / f"{stage}.folded").exists():
                errors[stage] = err.decode(errors="replace")[-400:]
        run_id = pipeline.run_id
    stages: dict[str, Any] = {}
    for stage in processes:
        stacks = read_folded(out_dir / f"{stage}.folded")
        (out_dir / f"{stage}.svg").write_text(flame_svg(stacks, f"p95 {stage} worker, e2e {signals} signals"))
        consumed = sum(after[t] - before.get(t, 0) for t in inputs[stage])
        cpu = cpu_after[stage] - cpu_before[stage]
        stages[stage] = {
            "cpu_s": round(cpu, 2),
            "consumed": consumed,
            "cpu_us_per_consumed": round(cpu / consumed * 1e6, 1) if consumed else None,
            "cpu_us_per_signal": round(cpu / signals * 1e6, 1),
            "idle_cores_before": round(idle_cores[stage], 3),
            "samples": sum(stacks.values()),
            "idle_sample_share": idle_share(stacks),
            "consumer_thread_share": consumer_thread_share(stacks),
            "areas": areas(stacks),
            "top_frames": top_frames(stacks),
            "flame_graph": str(out_dir / f"{stage}.svg"),
            **({"py_spy_error": errors[stage]} if stage in errors else {}),
        }
    result = {
        "value": round(signals / elapsed, 1),
        "unit": "signals/s (under py-spy: lower than without it)",
        "signals": signals,
        "prices": len(prices),
        "elapsed_s": round(elapsed, 2),
        "stages": stages,
        "cpu_us_per_signal_all_stages": round(sum(s["cpu_s"] for s in stages.values()) / signals * 1e6, 1),
        "out_dir": str(out_dir),
        "run_id": run_id,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    (out_dir / "profile.json").write_text(json.dumps(result, indent=2))
    return result
