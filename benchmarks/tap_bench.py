"""`p95 tap --format json` throughput to /dev/null, next to kcat's `-J` on the same topic.

    python benchmarks/tap_bench.py                        # 200,000 messages, 3 rounds
    python benchmarks/tap_bench.py --messages 500000 --mix prices --rounds 5
    python benchmarks/tap_bench.py --kafka 127.0.0.1:9092 # use a running broker

Starts a Tansu broker (unless --kafka or P95_KAFKA__BOOTSTRAP_SERVERS is given), creates a topic of
4 partitions and fills it with our Avro messages, framed, keyed and with headers as the stages
write them (--mix all: a pipeline-like mix of every message type, 60 % prices and 30 % position
events; --mix prices: market prices only). Then, alternating, round after round:

* `kcat -C -e -q -J` (Debian's kcat, run against the newer librdkafka bundled in the confluent-kafka
  wheel: Debian's librdkafka 2.0.2 cannot talk to Tansu);
* `p95 tap TOPIC -e --format json`, with the default decoding processes (one per core);
* the same with `--jobs 1` (one process), and with `--client aiokafka` (the fallback reader).

Each figure is messages / wall-clock seconds of the whole process, start-up included, output to
/dev/null; a first pass of each tool into a pipe checks it prints exactly one line per message.
The machine is shared, so the load average is printed with the figures, and the best and the
median of the rounds are reported. Also measured in this process on the same messages: the codec's
decode and the JSON encoding alone (best of many passes), the floor of what a tap can cost.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for tests.unit.samples: one realistic message of every type


def templates() -> dict[str, Any]:
    from tests.unit.samples import samples

    signal, analysis, verdict, order, tick, price, dead = samples()
    return {
        "signal": signal,
        "analysis": analysis,
        "verdict": verdict,
        "order": order,
        "tick": tick,
        "price": price,
        "dead": dead,
    }


#: Message types by position in a cycle; "rare" takes signal, analysis, verdict, order, dead letter in turn.
MIXES = {"all": ["price"] * 6 + ["tick"] * 3 + ["rare"], "prices": ["price"]}
RARE = ["signal", "analysis", "verdict", "order", "dead"]


def encoded_messages(count: int, mix: str) -> Iterator[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """(key, value, headers) like EventProducer writes them; every message has its own ids."""
    from phoenix95.schemas.codec import Codec
    from phoenix95.streams.producer import key_of

    codec = Codec()
    events = templates()
    cycle = MIXES[mix]
    for index in range(count):
        name = cycle[index % len(cycle)]
        if name == "rare":
            name = RARE[(index // len(cycle)) % len(RARE)]
        event_id = str(uuid.UUID(int=index + 1))
        fields: dict[str, Any] = {"event_id": event_id}
        if name in ("price", "dead"):
            fields["correlation_id"] = event_id
        elif name == "signal":
            fields.update(correlation_id=event_id, signal_id=event_id)
        event = events[name].model_copy(update=fields)
        headers = [codec.schema_header(event), ("p95-correlation-id", event.correlation_id.encode())]
        yield key_of(event) or b"", codec.encode(event), headers


def fill_topic(bootstrap: str, topic: str, count: int, mix: str) -> dict[str, float]:
    from confluent_kafka import Producer

    from phoenix95.connectors.kafka_admin import ensure_topics

    asyncio.run(ensure_topics(bootstrap, [topic], partitions=4))
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000, "enable.idempotence": False}
    )
    sizes = []
    started = time.perf_counter()
    for index, (key, value, headers) in enumerate(encoded_messages(count, mix)):
        sizes.append(len(value))
        while True:
            try:
                producer.produce(topic, value, key=key, partition=index % 4, headers=headers)
                break
            except BufferError:
                producer.poll(0.05)
        if index % 10_000 == 0:
            producer.poll(0)
    if producer.flush(60):
        raise RuntimeError("could not write every message")
    return {
        "seconds": time.perf_counter() - started,
        "mean_bytes": statistics.mean(sizes),
        "min_bytes": min(sizes),
        "max_bytes": max(sizes),
    }


# -- kcat -----------------------------------------------------------------------------------------


def kcat_environment(workdir: Path) -> dict[str, str]:
    """LD_LIBRARY_PATH for Debian's kcat to load the librdkafka of the confluent-kafka wheel."""
    import confluent_kafka

    libs = Path(confluent_kafka.__file__).resolve().parent.parent / "confluent_kafka.libs"
    found = sorted(glob.glob(str(libs / "librdkafka-*.so.1")))
    if not found:
        raise RuntimeError(f"no librdkafka in {libs}")
    folder = workdir / "librdkafka"
    folder.mkdir(exist_ok=True)
    link = folder / "librdkafka.so.1"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(found[0])
    paths = [str(folder), str(libs), os.environ.get("LD_LIBRARY_PATH", "")]
    return {**os.environ, "LD_LIBRARY_PATH": ":".join(p for p in paths if p)}


# -- runs -----------------------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float  # wall clock, process start to exit
    cpu_seconds: float  # user + system of the process and its children (decoding processes)
    lines: int  # lines printed (counted only when asked)
    reading_rate: float | None  # msg/s of the reading phase, as p95 tap reports it


def timed(command: list[str], env: dict[str, str], *, count_lines: bool = False) -> Run:
    """Run `command` with stdout to /dev/null (or into a pipe, counting lines)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    if count_lines:
        result = subprocess.run(command, env=env, capture_output=True, check=False)
    else:
        with open(os.devnull, "wb") as devnull:
            result = subprocess.run(command, env=env, stdout=devnull, stderr=subprocess.PIPE, check=False)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.decode()[-2000:]}")
    reported = re.search(rb"read in ([0-9.]+)s \(([0-9,]+) msg/s", result.stderr)
    return Run(
        seconds=seconds,
        cpu_seconds=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        lines=result.stdout.count(b"\n") if count_lines else -1,
        reading_rate=float(reported.group(2).replace(b",", b"")) if reported else None,
    )


def process_cpu_seconds(pid: int | None) -> float | None:
    """CPU seconds a process (the broker) used so far, from /proc."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def floor_per_message(count: int, mix: str) -> dict[str, float]:
    """Best-of-many µs per message for decoding alone and JSON encoding alone, in this process."""
    from phoenix95.tap.decode import Decoder
    from phoenix95.tap.output import JsonFormatter

    sample = list(encoded_messages(min(2000, count), mix))
    decoder = Decoder()
    formatter = JsonFormatter()
    records = [("t", 0, i, 0, key, headers, value) for i, (key, value, headers) in enumerate(sample)]
    decoded = [decoder.decode(r[6], r[5]) for r in records]

    def best(function: Any, items: list[Any]) -> float:
        times = []
        for _ in range(15):
            started = time.perf_counter()
            for item in items:
                function(item)
            times.append((time.perf_counter() - started) / len(items) * 1e6)
        return min(times)

    return {
        "decode_us": best(lambda r: decoder.decode(r[6], r[5]), records),
        "json_us": best(lambda pair: formatter.format(*pair), list(zip(records, decoded, strict=True))),
    }


def _json_encoder() -> str:
    from phoenix95.tap.encoding import ENCODER

    return ENCODER


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kafka", default=os.environ.get("P95_KAFKA__BOOTSTRAP_SERVERS"), help="a running broker")
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--mix", choices=("all", "prices"), default="all")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print only the JSON summary")
    args = parser.parse_args()
    # Without kcat the tap is still measured; the summary says why its baseline is missing.
    kcat_missing = None if shutil.which("kcat") else "kcat is not installed (apt-get install kcat)"

    workdir = Path(tempfile.mkdtemp(prefix="p95-tap-bench-"))
    broker = None
    bootstrap = args.kafka
    if not bootstrap:
        from phoenix95.stack.services import start_broker

        broker = start_broker(workdir, preferred_port=0)
        bootstrap = broker.url
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))
    try:
        topic = f"bench.tap.{uuid.uuid4().hex[:8]}"
        say(f"writing {args.messages:,} messages ({args.mix}) to {topic} on {bootstrap} ...")
        written = fill_topic(bootstrap, topic, args.messages, args.mix)
        say(
            f"  {written['seconds']:.1f}s; value sizes {written['min_bytes']}-{written['max_bytes']} bytes, "
            f"mean {written['mean_bytes']:.0f}"
        )
        kcat_env = kcat_environment(workdir) if kcat_missing is None else {}
        tap_env = {**os.environ, "P95_KAFKA__BOOTSTRAP_SERVERS": bootstrap, "P95_NAMESPACE": ""}
        tap = [sys.executable, "-m", "phoenix95", "tap", topic, "-e", "--format", "json"]
        commands = {
            "kcat -J": (["kcat", "-C", "-b", bootstrap, "-t", topic, "-e", "-q", "-J"], kcat_env),
            "p95 tap": (tap, tap_env),
            "p95 tap --jobs 1": ([*tap, "--jobs", "1"], tap_env),
            "p95 tap --client aiokafka": ([*tap, "--client", "aiokafka"], tap_env),
        }
        if kcat_missing is not None:
            say(f"no baseline: {kcat_missing}")
            del commands["kcat -J"]
        for name, (command, env) in commands.items():
            lines = timed(command, env, count_lines=True).lines
            if lines != args.messages:
                raise RuntimeError(f"{name} printed {lines} lines for {args.messages} messages")
        say(f"every tool printed {args.messages:,} lines; timing {args.rounds} round(s) to /dev/null ...")
        rates: dict[str, list[float]] = {name: [] for name in commands}
        reading: dict[str, list[float]] = {name: [] for name in commands}
        cpu_us: dict[str, list[float]] = {name: [] for name in commands}
        broker_cpu_us: dict[str, list[float]] = {name: [] for name in commands}
        loads = []
        broker_pid = broker.pid if broker is not None else None
        for round_index in range(args.rounds):
            loads.append(os.getloadavg()[0])
            for name, (command, env) in commands.items():
                broker_before = process_cpu_seconds(broker_pid)
                run = timed(command, env)
                broker_after = process_cpu_seconds(broker_pid)
                rates[name].append(args.messages / run.seconds)
                cpu_us[name].append(run.cpu_seconds / args.messages * 1e6)
                if broker_before is not None and broker_after is not None:
                    broker_cpu_us[name].append((broker_after - broker_before) / args.messages * 1e6)
                if run.reading_rate is not None:
                    reading[name].append(run.reading_rate)
                phase = f", reading phase {run.reading_rate:,.0f} msg/s" if run.reading_rate else ""
                say(
                    f"  round {round_index + 1}: {name:<26} {args.messages / run.seconds:>10,.0f} msg/s "
                    f"({run.seconds:.2f}s{phase}; {run.cpu_seconds:.2f} CPU-s)"
                )
        floor = floor_per_message(args.messages, args.mix)
        summary = {
            "messages": args.messages,
            "mix": args.mix,
            "value_bytes": {k: round(v, 1) for k, v in written.items() if k.endswith("bytes")},
            "rates": {
                name: {"best": round(max(values)), "median": round(statistics.median(values))}
                for name, values in rates.items()
            },
            "reading_phase_rates": {
                name: {"best": round(max(values)), "median": round(statistics.median(values))}
                for name, values in reading.items()
                if values
            },
            "cpu_us_per_message": {name: round(min(values), 2) for name, values in cpu_us.items()},
            "broker_cpu_us_per_message": {
                name: round(min(values), 2) for name, values in broker_cpu_us.items() if values
            },
            "json_encoder": _json_encoder(),
            "load_average_1m": [round(load, 2) for load in loads],
            "floor_us_per_message": {k: round(v, 2) for k, v in floor.items()},
            "cpus": os.cpu_count(),
            "baseline_missing": kcat_missing,
        }
        if not args.json:
            print(f"\n{args.messages:,} messages ({args.mix}), value bytes {summary['value_bytes']}, to /dev/null")
            print(f"{'whole process, start-up included':<34}{'best msg/s':>12}{'median msg/s':>14}")
            for name, figures in summary["rates"].items():
                print(f"{name:<34}{figures['best']:>12,}{figures['median']:>14,}")
            print("reading phase (as p95 tap reports it)")
            for name, figures in summary["reading_phase_rates"].items():
                print(f"{name:<34}{figures['best']:>12,}{figures['median']:>14,}")
            print("CPU per message, least of the rounds (the tool and its processes; the broker)")
            for name, micros in summary["cpu_us_per_message"].items():
                broker_micros = summary["broker_cpu_us_per_message"].get(name)
                broker_text = f"{broker_micros:>8.2f} µs" if broker_micros is not None else ""
                print(f"{name:<34}{micros:>9.2f} µs{broker_text}")
            print(
                f"in-process floor per message: decode {floor['decode_us']:.1f} µs, JSON {floor['json_us']:.1f} µs; "
                f"load average at the rounds: {summary['load_average_1m']} on {os.cpu_count()} cores; "
                f"JSON by {summary['json_encoder']}"
            )
        print(json.dumps(summary))
    finally:
        if broker is not None:
            from phoenix95.stack.processes import stop

            stop(broker.pid, expect=broker.expect)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
