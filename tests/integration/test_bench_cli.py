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
