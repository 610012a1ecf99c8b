"""The monitoring deploy files: Prometheus config and alert rules, Grafana provisioning and dashboard.

With `promtool` (Debian: `apt-get install prometheus`) the files are checked by Prometheus itself and
the alerts are made to fire on synthetic series. Without it the YAML and JSON are parsed and checked
here; in both cases every metric a rule or panel uses must be one the code exports.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from phoenix95.monitoring.exporter import LagCollector
from phoenix95.monitoring.heartbeats import HeartbeatCollector
from phoenix95.monitoring.monitor import LagMonitor
from phoenix95.streams.metrics import PipelineMetrics

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
COMPOSE = ROOT / "docker-compose.kafka.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")

SEED_ALERTS = {"P95LiquidationRisk", "P95SlowAnalysis", "P95HighCPU"}
LAG_ALERTS = {"P95StageLagOverSLO", "P95SignalPathStale", "P95StageStalled"}
SEED_PANELS = (
    "Phoenix-95 score distribution",
    "Leveraged trades per minute",
    "Realtime PnL per symbol",
    "Processing rate",
    "VaR",
    "Distance to liquidation",
    "Lag per stage (seconds)",
)
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
METRIC_TOKEN = re.compile(r"\b(?:p95_[a-z0-9_]+|process_[a-z0-9_]+|[a-z_]+:p95_[a-z0-9_:]+)\b")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)


def load_rules() -> list[dict[str, Any]]:
    rules = []
    for path in RULE_FILES:
        document = yaml.safe_load(path.read_text())
        assert set(document) == {"groups"}, path
        for group in document["groups"]:
            assert group["name"] and group["rules"], path
            rules.extend(group["rules"])
    return rules


def exported_metric_names() -> set[str]:
    """Every series name the workers and the lag exporter can expose."""
    registry = CollectorRegistry()
    metrics = PipelineMetrics("analysis", registry=registry, clock="wall")
    metrics.attach_lag(LagMonitor(reader=None, targets=[]))  # type: ignore[arg-type]
    names: set[str] = set()
    collectors = [LagCollector(LagMonitor(None, [])), HeartbeatCollector(None)]  # type: ignore[arg-type]
    for family in [*registry.collect(), *(f for c in collectors for f in c.describe())]:
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    names.update({"process_cpu_seconds_total", "process_resident_memory_bytes"})  # ProcessCollector (Linux)
    from phoenix95.notify.sender import NotifyMetrics

    for family in NotifyMetrics().registry.collect():  # the notifications worker's own series
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names


def dashboard_expressions() -> list[tuple[str, str]]:
    found = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            found.extend((panel["title"], target["expr"]) for target in panel.get("targets", []))
    return found


def as_promql(grafana_expr: str) -> str:
    """Grafana's range variables replaced by a duration, so Prometheus can parse the query."""
    return re.sub(r"\$__(range|rate_interval|interval)", "5m", grafana_expr)


# -- rules -----------------------------------------------------------------------------------------


def test_rule_files_parse_and_every_alert_is_complete():
    rules = load_rules()
    alerts = [rule for rule in rules if "alert" in rule]
    names = [rule["alert"] for rule in alerts]
    assert len(names) == len(set(names)), "alert names are unique"
    assert set(names) >= SEED_ALERTS | LAG_ALERTS
    for rule in alerts:
        assert rule["expr"].strip(), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        assert DURATION.match(str(rule.get("for", "0s"))), rule["alert"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
        assert rule["expr"].count("{") == rule["expr"].count("}"), rule["alert"]
    for rule in rules:
        if "record" in rule:
            assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", rule["record"]), rule["record"]


def test_seed_thresholds_are_kept():
    by_name = {rule["alert"]: rule for rule in load_rules() if "alert" in rule}
    assert re.search(r"p95_position_distance_to_liquidation_percent\s*<\s*10\b", by_name["P95LiquidationRisk"]["expr"])
    assert re.search(r'stage="analysis".*\)\s*>\s*1$', by_name["P95SlowAnalysis"]["expr"])
    assert re.search(r"\*\s*100\s*>\s*80$", by_name["P95HighCPU"]["expr"])


def test_rules_and_panels_use_only_metrics_the_code_exports():
    known = exported_metric_names()
    known |= {rule["record"] for rule in load_rules() if "record" in rule}
    used = {
        (rule.get("alert") or rule["record"], token)
        for rule in load_rules()
        for token in METRIC_TOKEN.findall(rule["expr"])
    }
    used |= {(title, token) for title, expr in dashboard_expressions() for token in METRIC_TOKEN.findall(expr)}
    unknown = sorted((where, token) for where, token in used if token not in known)
    assert not unknown, f"metrics that nothing exports: {unknown}"
    assert len(used) > 20


@needs_promtool
def test_rule_files_pass_promtool():
    result = promtool("check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_prometheus_config_passes_promtool_and_loads_every_rule_file():
    result = promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in result.stdout


@needs_promtool
def test_alerts_fire_on_synthetic_series(tmp_path):
    series = {
        'p95_position_distance_to_liquidation_percent{symbol="BTCUSDT",side="long",position_id="p1"}': "25 20 9x20",
        'p95_position_distance_to_liquidation_percent{symbol="ETHUSDT",side="short",position_id="p2"}': "35x22",
        'p95_stage_batch_seconds_bucket{stage="analysis",le="0.5"}': "0+1x22",
        'p95_stage_batch_seconds_bucket{stage="analysis",le="1.0"}': "0+1x22",
        'p95_stage_batch_seconds_bucket{stage="analysis",le="2.5"}': "0+10x22",
        'p95_stage_batch_seconds_bucket{stage="analysis",le="+Inf"}': "0+10x22",
        'p95_stage_batch_seconds_bucket{stage="risk",le="0.5"}': "0+10x22",
        'p95_stage_batch_seconds_bucket{stage="risk",le="+Inf"}': "0+10x22",
        'process_cpu_seconds_total{job="phoenix95-workers",instance="risk:9602"}': "0+13.5x22",
        'process_cpu_seconds_total{job="phoenix95-workers",instance="analysis:9601"}': "0+1.5x22",
        'p95_consumer_group_lag_seconds{group="p95-execution",stage="execution"}': "0 5 12 14 16 18 20x16",
        'p95_consumer_group_lag_seconds{group="p95-risk",stage="risk"}': "0 40x21",
        'p95_consumer_group_lag_seconds{group="p95-analysis",stage="analysis"}': "0x22",
        'p95_consumer_partition_status{group="p95-positions",stage="positions",topic="p95.orders",partition="0",status="STALL"}': "0 1x21",
        'p95_consumer_partition_status{group="p95-analysis",stage="analysis",topic="p95.signals",partition="0",status="REWIND"}': "0 1x21",
        'p95_stage_dead_lettered_total{stage="analysis",reason="DECODE_ERROR"}': "0 0 1x20",
        'p95_stage_sink_retries_total{stage="positions",store="postgres"}': "0 0+1x21",
        'p95_stage_sink_retries_total{stage="risk",store="redis"}': "0x22",
        'up{job="phoenix95-workers",instance="positions:9604"}': "1 0x21",
        'up{job="phoenix95-workers",instance="risk:9602"}': "1x22",
        "p95_lag_last_sample_timestamp_seconds": "0x22",
        'p95_notifications_total{channel="tgram-1",type="position_closed",outcome="failed"}': "0 0 1x20",
        'p95_notifications_total{channel="json-2",type="position_closed",outcome="failed"}': "0x22",
        'p95_worker_heartbeat_up{stage="execution"}': "1 1 0x20",
        'p95_worker_heartbeat_up{stage="risk"}': "1x22",
    }

    def firing(name: str, *labels: dict[str, str], at: str = "4m") -> dict[str, Any]:
        return {
            "expr": f'ALERTS{{alertname="{name}",alertstate="firing"}}',
            "eval_time": at,
            "exp_samples": [
                {"labels": "ALERTS" + _labels({"alertname": name, "alertstate": "firing", **extra}), "value": 1}
                for extra in labels
            ],
        }

    crit, warn = {"severity": "critical"}, {"severity": "warning"}
    expectations = [
        {"expr": "ALERTS", "eval_time": "0m", "exp_samples": []},
        firing("P95LiquidationRisk", {**crit, "symbol": "BTCUSDT", "side": "long", "position_id": "p1"}),
        firing("P95SlowAnalysis", warn),
        firing("P95HighCPU", {**warn, "job": "phoenix95-workers", "instance": "risk:9602"}),
        firing("P95StageLagOverSLO", {**warn, "stage": "execution"}, {**warn, "stage": "risk"}),
        firing("P95SignalPathStale", {**crit, "stage": "risk"}),
        firing("P95StageStalled", {**crit, "group": "p95-positions", "stage": "positions"}),
        firing("P95ConsumerRewound", {**warn, "group": "p95-analysis", "stage": "analysis"}),
        firing("P95DeadLetters", {**warn, "stage": "analysis", "reason": "DECODE_ERROR"}),
        firing("P95SinkRetrying", {**warn, "stage": "positions", "store": "postgres"}),
        firing("P95WorkerDown", {**crit, "job": "phoenix95-workers", "instance": "positions:9604"}),
        firing("P95LagSamplesStale", warn),
        firing("P95NotificationsFailed", {**warn, "channel": "tgram-1"}),
        firing("P95WorkerHeartbeatMissing", {**crit, "stage": "execution"}),
        firing("P95LiquidationRisk", at="30s"),  # pending, not yet firing (for: 30s)
    ]
    tests = {
        "rule_files": [str(path) for path in RULE_FILES],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": [{"series": name, "values": values} for name, values in series.items()],
                "promql_expr_test": expectations,
            }
        ],
    }
    path = tmp_path / "alerts_test.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    result = promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    fired = {rule["alert"] for rule in load_rules() if "alert" in rule}
    assert fired <= {e["expr"].split('"')[1] for e in expectations[1:]}, "every alert is exercised"


def _labels(values: dict[str, str]) -> str:
    return "{" + ", ".join(f'{key}="{value}"' for key, value in sorted(values.items())) + "}"


# -- scrape config ---------------------------------------------------------------------------------


def test_scrape_targets_are_the_compose_services_and_ports():
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["rules/*.yml"]
    targets = {
        job["job_name"]: {target for static in job["static_configs"] for target in static["targets"]}
        for job in config["scrape_configs"]
    }
    compose = yaml.safe_load(COMPOSE.read_text())["services"]
    workers = set()
    for name in ("analysis", "risk", "execution", "positions", "notifications", "compliance"):
        command = compose[name]["command"]
        workers.add(f"{name}:{command[command.index('--web-port') + 1]}")
    assert (
        targets["phoenix95-workers"]
        == workers
        == {
            "analysis:9601",
            "risk:9602",
            "execution:9603",
            "positions:9604",
            "notifications:9605",
            "compliance:9606",
        }
    )
    lag_command = compose["lag-exporter"]["command"]
    assert lag_command[:2] == ["lag", "--serve"]
    assert targets["phoenix95-lag"] == {f"lag-exporter:{lag_command[lag_command.index('--port') + 1]}"}
    webhook_command = compose["webhook"]["command"]
    assert targets["phoenix95-webhook"] == {f"webhook:{webhook_command[webhook_command.index('--port') + 1]}"}
    volumes = compose["prometheus"]["volumes"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in volumes


# -- grafana ---------------------------------------------------------------------------------------


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboard_folder():
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"]
    (prometheus,) = datasources
    assert prometheus["type"] == "prometheus" and prometheus["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "phoenix95.yml").read_text())["providers"]
    compose = yaml.safe_load(COMPOSE.read_text())["services"]["grafana"]["volumes"]
    mounted = {volume.split(":")[0]: volume.split(":")[1] for volume in compose}
    assert mounted["./deploy/grafana/dashboards"] == providers[0]["options"]["path"]
    assert mounted["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == prometheus["uid"], panel["title"]


def test_dashboard_has_the_seed_panels_and_lag_per_stage():
    assert DASHBOARDS
    (dashboard,) = [json.loads(path.read_text()) for path in DASHBOARDS]
    titles = [panel["title"] for panel in dashboard["panels"]]
    for wanted in SEED_PANELS:
        assert any(title.startswith(wanted) for title in titles), wanted
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
    heatmap = next(panel for panel in dashboard["panels"] if panel["title"] == "Distance to liquidation")
    assert heatmap["type"] == "heatmap" and heatmap["targets"][0]["format"] == "heatmap"
    lag = next(panel for panel in dashboard["panels"] if panel["title"] == "Lag per stage (seconds)")
    assert (
        "p95_consumer_group_lag_seconds" in lag["targets"][0]["expr"] and lag["fieldConfig"]["defaults"]["unit"] == "s"
    )


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path):
    """promtool parses every panel query (as a recording rule: it has no standalone query check)."""
    rules = [
        {"record": f"dashboard:query_{index}:check", "expr": as_promql(expr)}
        for index, (_title, expr) in enumerate(dashboard_expressions())
    ]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
