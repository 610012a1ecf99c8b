"""docs/benchmarks.md, written from one `p95 bench --json` run file: every figure in it comes from
that file, none is typed by hand.

    python -m phoenix95.bench.report docs/runs/NAME.json > docs/benchmarks.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

METHOD = """\
## Method

`p95 bench` brings the embedded stack up if none is running (and stops what it started), then runs
each scenario and measures its baseline **in the same run, on the same machine**: the machines here
are shared and noisy, so only the ratios compare from run to run, not the absolute figures.

```sh
p95 bench --quick --json > docs/runs/NAME.json      # every scenario, small sizes
p95 bench --json > docs/runs/NAME.json              # the full run
p95 bench --only sink_postgres,sink_redis --json    # some scenarios
python -m phoenix95.bench.report docs/runs/NAME.json > docs/benchmarks.md
```

| scenario | what it measures | baseline |
|---|---|---|
| `broker_raw` | aiokafka produce and consume against the broker | confluent-kafka on the same broker |
| `sink_postgres` | signal rows written the stages' way (batches, COPY, upserts) | one row per statement, autocommit |
| `sink_redis` | hot-state writes in pipelines | one command per round trip |
| `sink_timeseries` | price points in batched writes | one point per request |
| `e2e_throughput` | signals and prices through the four workers and every sink | a naive Faust pipeline (one INSERT per message, no logic); Quix Streams without sinks |
| `signal_to_order_latency` | signal published to order written, at a fixed offered rate (wall clock) | – |
| `price_throughput` | prices/s sustained with every price group's lag flat (ten symbols, 200 open positions, signals at 10/s beside), price->position-tick p50/p99, CPU per price per stage | a Quix Streams consumer of the same topic doing no work |
| `latency_live` | signal->verdict and signal->position opened p50/p99/max at 50 signals/s, a price per symbol every 100 ms | the same four hops relayed by bare aiokafka consumers and producers doing no work, same rates |
| `webhook_ack_latency` | alert posted to answer (broker confirmed), open loop at a fixed rate | – |
| `replay_inprocess` | events a second through the in-process replay | every tick through the paper book |
| `replay_kafka` | the bundled sample through the real workers; its digest must equal in-process | the in-process replay |
| `tap` | `p95 tap` reading mixed messages as JSON lines | `kcat -J` |
| `audit_chain_cost` | the `e2e_throughput` workload with the audit chain on: its cost in % of the throughput (and of the workers' CPU per signal) | the same workload with `compliance.audit_enabled=false` |
"""


def _number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def _brief(value: Any) -> str:
    """A baseline or detail, on one line."""
    if isinstance(value, dict):
        return "; ".join(f"{key}: {_brief(item)}" for key, item in value.items() if not isinstance(item, list))
    if isinstance(value, list):
        return ", ".join(_brief(item) for item in value)
    return _number(value)


def _get(figure: dict[str, Any] | None, *path: str) -> Any:
    value: Any = figure
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _meets(value: Any, bound: float, *, at_most: bool = False) -> str:
    if not isinstance(value, int | float):
        return "not measured"
    return "met" if (value <= bound if at_most else value >= bound) else "not met"


def targets(scenarios: dict[str, Any]) -> list[str]:
    """#23's targets table, filled from the run's figures."""
    e2e, prices, live = (scenarios.get(n) for n in ("e2e_throughput", "price_throughput", "latency_live"))
    replay = scenarios.get("replay_kafka")
    quix = _get(e2e, "baseline", "quix_streams", "signals_per_s")
    e2e_ratio = round(e2e["value"] / quix, 3) if e2e and e2e.get("value") and quix else None
    verdict, opened = _get(live, "signal_to_verdict_ms", "p99"), _get(live, "signal_to_position_opened_ms", "p99")
    rows = [
        ("`e2e_throughput`, all sinks", f"{_number(e2e_ratio)}× Quix-without-sinks", "≥ 0.3×", _meets(e2e_ratio, 0.3)),
        (
            "`price_throughput`, 200 open positions",
            f"{_number(_get(prices, 'value'))} prices/s, {_number(_get(prices, 'ratio'))}× Quix pass-through",
            "≥ 20,000 prices/s and ≥ 0.3×",
            "met"
            if _meets(_get(prices, "value"), 20000) == "met" and _meets(_get(prices, "ratio"), 0.3) == "met"
            else _meets(_get(prices, "value"), 20000),
        ),
        ("signal→verdict p99 at 50/s", f"{_number(verdict)} ms", "≤ 30 ms", _meets(verdict, 30, at_most=True)),
        ("signal→position opened p99 at 50/s", f"{_number(opened)} ms", "≤ 100 ms", _meets(opened, 100, at_most=True)),
        ("`replay_kafka`", f"{_number(_get(replay, 'value'))} {_get(replay, 'unit') or ''}".strip(),
         "≥ 2,000 events/s, same digest", _meets(_get(replay, "value"), 2000)),
    ]  # fmt: skip
    lines = ["## Targets (#23)", "", "| scenario | this run | target | |", "|---|---|---|---|"]
    lines += [f"| {a} | {b if d != 'not measured' else '–'} | {c} | {d} |" for a, b, c, d in rows]
    return lines


def render(run: dict[str, Any], name: str) -> str:
    machine = run.get("machine", {})
    lines = [
        "# Benchmarks",
        "",
        f"Written by `python -m phoenix95.bench.report {name}` from that run file; do not edit by hand.",
        "",
        *METHOD.splitlines(),
        "",
        "## Figures",
        "",
        f"Run `{name}`: {machine.get('date', '?')}, {'quick sizes' if run.get('quick') else 'full sizes'}, "
        f"{machine.get('cores', '?')} cores, Python {machine.get('python', '?')}, {machine.get('platform', '?')}; "
        f"load average {_brief(machine.get('load_average'))} before and "
        f"{_brief(machine.get('load_average_after'))} after. The machine was shared with other work while "
        "it ran: compare the ratios, not the absolute figures.",
        "",
        "| scenario | figure | baseline in the same run | ratio | took |",
        "|---|---|---|---|---|",
    ]
    for scenario, figure in run.get("scenarios", {}).items():
        if figure.get("error"):
            shown = f"failed: {figure['error']}"
        elif figure.get("skipped"):
            shown = f"skipped: {figure['skipped']}"
        else:
            shown = f"{_number(figure.get('value'))} {figure.get('unit', '')}".strip()
        baseline = _brief(figure.get("baseline")) if figure.get("baseline") is not None else "–"
        ratio = f"{_number(figure['ratio'])}×" if figure.get("ratio") is not None else "–"
        took = f"{_number(figure.get('took_s'))} s" if figure.get("took_s") is not None else "–"
        lines.append(f"| `{scenario}` | {shown} | {baseline} | {ratio} | {took} |")
    lines += ["", "Every field of each scenario is in the run file.", "", *targets(run.get("scenarios", {}))]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m phoenix95.bench.report RUN_FILE.json > docs/benchmarks.md", file=sys.stderr)
        return 2
    path = Path(args[0])
    try:
        run = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        print(f"error: cannot read {path}: {error}", file=sys.stderr)
        return 2
    sys.stdout.write(render(run, args[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
