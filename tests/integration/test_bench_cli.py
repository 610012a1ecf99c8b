"""`p95 bench --json`: the documented shape (machine, scenarios with value, unit, baseline and ratio),
on the real stores, for the scenarios that take seconds (the pipeline ones run in `p95 bench --quick`)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from phoenix95.cli.main import app

pytestmark = pytest.mark.integration


def test_bench_json_reports_each_scenario_next_to_its_baseline(namespace, services):
    names = ["broker_raw", "sink_postgres", "sink_redis"] + (["sink_timeseries"] if services.influx else [])
    result = CliRunner().invoke(app, ["bench", "--quick", "--json", "--only", ",".join(names)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["quick"] is True
    assert {"date", "cores", "python", "broker", "load_average", "load_average_after"} <= report["machine"].keys()
    assert list(report["scenarios"]) == names
    for name, figure in report["scenarios"].items():
        assert "error" not in figure, (name, figure)
        assert figure["value"] > 0 and figure["unit"] and figure["baseline"], (name, figure)
    for name in names[1:]:  # the sinks: batched against one at a time, and the ratio of the two
        figure = report["scenarios"][name]
        (baseline,) = figure["baseline"].values()
        assert figure["ratio"] == pytest.approx(figure["value"] / baseline, rel=0.01)
    broker = report["scenarios"]["broker_raw"]["baseline"]
    assert broker["aiokafka"]["produce"] > 0 and broker["confluent_kafka"]["consume"] > 0


def test_bench_refuses_an_unknown_scenario_with_the_known_names():
    result = CliRunner().invoke(app, ["bench", "--only", "e2e_speed"])
    assert result.exit_code != 0
    message = str(result.exception)  # main() prints a UserError as one line, no traceback
    assert "unknown scenario(s) e2e_speed" in message and "e2e_throughput" in message


def test_bench_measures_the_tap_without_kcat_and_reports_its_baseline_as_missing(namespace, tmp_path, monkeypatch):
    """No kcat on PATH: the tap scenario still runs, with `"baseline": null` and the reason."""
    from phoenix95.bench import external
    from phoenix95.settings import get_settings

    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no kcat (the tools run by absolute path)
    figure = external.run("tap", get_settings(), quick=True, messages=3000)
    assert figure["baseline"] is None
    assert "kcat is not installed" in figure["baseline_missing"]
    assert figure["value"] > 0 and figure["ratio"] is None


def test_a_missing_quix_baseline_is_null_with_the_reason_and_not_measured(monkeypatch):
    from phoenix95.bench import quix_baseline
    from phoenix95.bench.external import optional_baseline

    monkeypatch.setenv("P95_BENCH_NO_QUIX", "1")
    calls = []
    figure, reason = optional_baseline(quix_baseline.missing(), lambda: calls.append(1))
    assert (figure, reason, calls) == (None, "disabled by P95_BENCH_NO_QUIX", [])
    assert optional_baseline(None, lambda: {"signals_per_s": 1.0}) == ({"signals_per_s": 1.0}, None)
