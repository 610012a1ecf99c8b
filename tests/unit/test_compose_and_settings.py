"""The production compose file, and settings: environment, endpoints file, masking."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from phoenix95.cli.main import app
from phoenix95.settings import Settings, get_settings

ROOT = Path(__file__).resolve().parents[2]
SECRET_KEYS = re.compile(r"PASSWORD|TOKEN|SECRET", re.IGNORECASE)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.kafka.yml").read_text())


def test_compose_has_kafka_in_kraft_mode_and_the_stores(compose):
    services = compose["services"]
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    assert services["postgres"]["image"].startswith("postgres:15")
    assert services["redis"]["image"].startswith("redis:7")
    assert services["influxdb"]["image"].startswith("influxdb:2")


def test_compose_runs_every_stage_and_the_monitoring(compose):
    services = compose["services"]
    for stage in ("analysis", "risk", "execution", "positions"):
        assert services[stage]["command"][:3] == ["worker", "--stage", stage]
    assert {"webhook", "lag-exporter", "prometheus", "grafana", "migrate"} <= set(services)


def test_compose_runs_the_notification_hub_with_its_urls_from_the_environment_and_the_compliance_monitor(compose):
    services = compose["services"]
    hub = services["notifications"]
    assert hub["command"][:3] == ["worker", "--stage", "notifications"]
    assert hub["environment"]["P95_NOTIFY__URLS"] == "${P95_NOTIFY__URLS:-[]}"
    assert services["compliance"]["command"][:3] == ["worker", "--stage", "compliance"]
    ports = {name: services[name]["environment"]["P95_STAGE_PORT"] for name in ("notifications", "compliance")}
    assert all(services[name]["command"][-1] == port for name, port in ports.items())
    scraped = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())["scrape_configs"][0]
    targets = scraped["static_configs"][0]["targets"]
    assert {f"{name}:{port}" for name, port in ports.items()} <= set(targets)


def test_every_long_running_service_has_a_health_check_and_named_volumes(compose):
    for name, service in compose["services"].items():
        if service.get("restart") == "no":
            continue
        assert "healthcheck" in service, name
    for name in ("kafka", "postgres", "redis", "influxdb", "prometheus", "grafana"):
        volumes = compose["services"][name]["volumes"]
        named = [v.split(":")[0] for v in volumes if not v.startswith(".")]
        assert all(volume in compose["volumes"] for volume in named), name


def test_compose_holds_no_literal_secrets(compose):
    text = (ROOT / "docker-compose.kafka.yml").read_text()
    for line in text.splitlines():
        if SECRET_KEYS.search(line.split(":")[0]) and ":" in line:
            value = line.split(":", 1)[1].strip()
            assert value == "" or "${" in value or value.startswith("&") or value.startswith("*"), line
    example = (ROOT / ".env.example").read_text()
    assert "change-me" in example


def test_settings_read_nested_environment_variables(monkeypatch):
    monkeypatch.setenv("P95_KAFKA__PARTITIONS", "8")
    monkeypatch.setenv("P95_RISK__LEVERAGE", "10")
    monkeypatch.setenv("P95_RISK__OVERRIDES", '{"btcusdt": {"leverage": 5}}')
    settings = Settings()
    assert settings.kafka.partitions == 8
    config = settings.risk.trading_config()
    assert config.leverage == 10 and config.for_symbol("BTCUSDT").leverage == 5


def test_endpoints_written_by_p95_up_are_read_below_the_environment(tmp_path, monkeypatch):
    (tmp_path / "endpoints.json").write_text(
        json.dumps(
            {
                "kafka": {"url": "127.0.0.1:19999"},
                "postgres": {"url": "postgresql://u:pw@127.0.0.1:5555/db"},
                "redis": {"url": "redis://127.0.0.1:6390/0"},
                "timeseries": {"url": "http://127.0.0.1:8499"},
            }
        )
    )
    monkeypatch.setenv("P95_HOME", str(tmp_path))
    monkeypatch.delenv("P95_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("P95_REDIS__URL", "redis://elsewhere:6379/1")
    settings = Settings()
    assert settings.kafka.bootstrap_servers == "127.0.0.1:19999"
    assert settings.postgres_url() == "postgresql://u:pw@127.0.0.1:5555/db"
    assert settings.redis_url() == "redis://elsewhere:6379/1"
    assert settings.influx.url == "http://127.0.0.1:8499"


def test_config_show_masks_secrets(monkeypatch):
    monkeypatch.setenv("P95_POSTGRES__URL", "postgresql://trader:hunter2@db:5432/p95")
    monkeypatch.setenv("P95_WEBHOOK__SECRETS", '{"tradingview": "s3cr3t-value"}')
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["config", "show", "--json"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.stdout and "s3cr3t-value" not in result.stdout
    shown = json.loads(result.stdout)
    assert shown["postgres"]["url"] == "**********"
    assert shown["webhook"]["secrets"]["tradingview"] == "**********"


def test_production_refuses_development_defaults(monkeypatch):
    monkeypatch.setenv("P95_ENVIRONMENT", "production")
    with pytest.raises(RuntimeError, match="development default"):
        Settings().check_production()
