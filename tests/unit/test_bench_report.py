"""docs/benchmarks.md is written from a run file: every figure in it is the run file's."""

from __future__ import annotations

from phoenix95.bench.report import render, render_runs

RUN = {
    "machine": {"date": "2026-12-04T16:44:57+00:00", "cores": 2, "python": "3.11.7", "platform": "Linux",
                "load_average": [1.5, 1.0, 0.5], "load_average_after": [2.0, 1.0, 0.5]},
    "quick": True,
    "scenarios": {
        "sink_postgres": {"value": 23033.4, "unit": "rows/s", "baseline": {"naive": 854.0}, "ratio": 27.6,
                          "took_s": 41.2},
        "tap": {"value": None, "error": "RuntimeError: no kcat", "took_s": 0.1},
    },
}  # fmt: skip


def test_the_page_shows_each_scenario_of_the_run_file_with_its_baseline_and_ratio():
    page = render(RUN, "docs/runs/example.json")
    assert "| `sink_postgres` | 23,033 rows/s | naive: 854 | 27.60× | 41.20 s |" in page
    assert "| `tap` | failed: RuntimeError: no kcat | – | – | 0.10 s |" in page


def test_the_page_names_its_run_file_and_says_the_machine_was_shared():
    page = render(RUN, "docs/runs/example.json")
    assert "python -m phoenix95.bench.report docs/runs/example.json" in page
    assert "quick sizes" in page and "load average 1.50, 1.00, 0.50 before" in page
    assert "shared with other work" in page


def test_the_targets_of_issue_23_are_filled_from_the_run_and_say_met_or_not():
    run = {
        "scenarios": {
            "price_throughput": {"value": 25000.0, "ratio": 0.4, "unit": "prices/s"},
            "latency_live": {"signal_to_verdict_ms": {"p99": 45.0}, "signal_to_position_opened_ms": {"p99": 90.0}},
        }
    }
    page = render(run, "docs/runs/example.json")
    assert "| `price_throughput`, 200 open positions | 25,000 prices/s, 0.40× Quix pass-through |" in page
    assert "| signal→verdict p99 at 50/s | 45.00 ms | ≤ 30 ms | not met |" in page
    assert "| signal→position opened p99 at 50/s | 90.00 ms | ≤ 100 ms | met |" in page
    assert "| `replay_kafka` | – | ≥ 2,000 events/s, same digest | not measured |" in page


def test_several_run_files_each_show_their_figures_and_the_targets_take_the_latest_measure():
    older = {
        "machine": {"date": "2026-12-04T20:00:00+00:00"},
        "scenarios": {
            "audit_chain_cost": {"value": 4.0, "unit": "% of e2e_throughput"},
            "e2e_notifications": {"value": 0.61, "unit": "x"},
            "exchange_order_ack": {"value": 7.87, "p99_ms": 7.87, "unit": "ms"},
        },
    }
    newer = {"machine": {"date": "2026-12-05T09:00:00+00:00"}, "scenarios": {
        "e2e_notifications": {"value": 0.96, "unit": "x"},
        "notify_latency": {"value": None, "error": "receiver down"},
    }}  # fmt: skip
    page = render_runs([("docs/runs/older.json", older), ("docs/runs/newer.json", newer)])
    assert "python -m phoenix95.bench.report docs/runs/older.json docs/runs/newer.json" in page
    assert page.index("### `docs/runs/older.json`") < page.index("### `docs/runs/newer.json`")
    assert "| `e2e_notifications` | 0.61 x |" in page and "| `e2e_notifications` | 0.96 x |" in page
    assert "| `audit_chain_cost` (#18) | 4.00 % of `e2e_throughput` | ≤ 10 % | met |" in page
    assert "| `e2e_notifications`, on / off (#22) | 0.96× | ≥ 0.95× | met |" in page
    assert "| `exchange_order_ack` p99 at 20 orders/s (#20) | 7.87 ms | ≤ 50 ms | met |" in page
    assert "| `notify_latency` p99 at 50 events/s (#22) | – | ≤ 1,000 ms | not measured |" in page
