"""docs/benchmarks.md, written from `p95 bench --json` run files: every figure in it comes from a
named run file, none is typed by hand.

    python -m phoenix95.bench.report docs/runs/OLDER.json docs/runs/NEWER.json > docs/benchmarks.md
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
python -m phoenix95.bench.report docs/runs/A.json docs/runs/B.json > docs/benchmarks.md   # oldest first
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
| `e2e_sse_clients` | the `e2e_throughput` workload with 100 dashboard SSE clients connected | the same workload without them |
| `notify_latency` | position event acknowledged to notification received by an HTTP receiver, 50 events/s | the raw Apprise send |
| `e2e_notifications` | the `e2e_throughput` workload with the notification hub on (an HTTP receiver), its CPU per notification | the same workload with it off |
| `exchange_order_ack` | verdict to order acknowledged by the Binance simulator at 20 orders/s, duplicates at the exchange | the simulator's own round trip |
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
    lines = ["## Targets (#23)", "", "| scenario | latest run | target | |", "|---|---|---|---|"]
    lines += [f"| {a} | {b if d != 'not measured' else '–'} | {c} | {d} |" for a, b, c, d in rows]
    return lines


def other_targets(scenarios: dict[str, Any]) -> list[str]:
    """The other issues' speed targets that `p95 bench` measures, filled from the runs' figures."""
    audit, notify = scenarios.get("audit_chain_cost"), scenarios.get("notify_latency")
    on_off, ack = scenarios.get("e2e_notifications"), scenarios.get("exchange_order_ack")
    rows = [
        ("`audit_chain_cost` (#18)", f"{_number(_get(audit, 'value'))} % of `e2e_throughput`", "≤ 10 %",
         _meets(_get(audit, "value"), 10, at_most=True)),
        ("`notify_latency` p99 at 50 events/s (#22)", f"{_number(_get(notify, 'p99_ms'))} ms", "≤ 1,000 ms",
         _meets(_get(notify, "p99_ms"), 1000, at_most=True)),
        ("`e2e_notifications`, on / off (#22)", f"{_number(_get(on_off, 'value'))}×", "≥ 0.95×",
         _meets(_get(on_off, "value"), 0.95)),
        ("`exchange_order_ack` p99 at 20 orders/s (#20)", f"{_number(_get(ack, 'p99_ms'))} ms", "≤ 50 ms",
         _meets(_get(ack, "p99_ms"), 50, at_most=True)),
    ]  # fmt: skip
    lines = ["## Other targets (#18, #20, #22)", "", "| scenario | latest run | target | |", "|---|---|---|---|"]
    lines += [f"| {a} | {b if d != 'not measured' else '–'} | {c} | {d} |" for a, b, c, d in rows]
    return lines


def _figures(run: dict[str, Any], name: str) -> list[str]:
    machine = run.get("machine", {})
    lines = [
        f"### `{name}`",
        "",
        f"{machine.get('date', '?')}, {'quick sizes' if run.get('quick') else 'full sizes'}, "
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
    return lines


def render_runs(runs: list[tuple[str, dict[str, Any]]]) -> str:
    """The page for several run files, oldest first: each run's figures, and the targets tables filled
    with each scenario from the last run that measured it."""
    names = " ".join(name for name, _ in runs)
    latest: dict[str, Any] = {}
    for _, run in runs:
        latest.update(
            {n: f for n, f in run.get("scenarios", {}).items() if not f.get("error") and not f.get("skipped")}
        )
    lines = [
        "# Benchmarks",
        "",
        f"Written by `python -m phoenix95.bench.report {names}` from those run files; do not edit by hand.",
        "",
        *METHOD.splitlines(),
        "",
        "## Figures",
        "",
        "Each run file's figures, oldest first. Every field of each scenario is in its run file.",
    ]
    for name, run in runs:
        lines += ["", *_figures(run, name)]
    lines += ["", *targets(latest), "", *other_targets(latest)]
    return "\n".join(lines) + "\n"


def render(run: dict[str, Any], name: str) -> str:
    """The page for one run file."""
    return render_runs([(name, run)])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m phoenix95.bench.report RUN_FILE.json [RUN_FILE.json ...] > docs/benchmarks.md",
              file=sys.stderr)  # fmt: skip
        return 2
    runs = []
    for arg in args:
        path = Path(arg)
        try:
            runs.append((arg, json.loads(path.read_text())))
        except (OSError, ValueError) as error:
            print(f"error: cannot read {path}: {error}", file=sys.stderr)
            return 2
    sys.stdout.write(render_runs(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
