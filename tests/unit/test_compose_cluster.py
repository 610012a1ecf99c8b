"""The scaled-out compose file (docker-compose.cluster.yml): valid Compose (checked by the
compose-spec parser of the `compose-spec` package, after YAML merge keys are applied as Compose does),
three KRaft brokers with replication factor 3 and min.insync.replicas 2, idempotent acks=all
producers, and two instances of every stage."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from compose_spec import PyCompose

from phoenix95.settings import KafkaSettings
from phoenix95.streams.stages import STAGES

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "docker-compose.cluster.yml"
SECRET_KEYS = re.compile(r"PASSWORD|TOKEN|SECRET", re.IGNORECASE)
BROKERS = ("kafka-1", "kafka-2", "kafka-3")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def test_cluster_file_is_valid_compose(compose):
    parsed = PyCompose.from_json(json.dumps(compose))  # raises ValueError on anything off-spec
    assert set(parsed.service_names()) == set(compose["services"])
    with pytest.raises(ValueError):  # the parser does reject what Compose rejects
        PyCompose.from_json(json.dumps({"services": {"x": {"image": "a", "deploy": {"replicas": "two"}}}}))


def test_every_reference_resolves(compose):
    services, volumes = compose["services"], compose["volumes"]
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith(".") or source in volumes, (name, source)


def test_three_kraft_brokers_replicate_every_partition_three_times_and_need_two_in_sync(compose):
    services = compose["services"]
    voters = set()
    node_ids = set()
    for broker in BROKERS:
        env = services[broker]["environment"]
        assert services[broker]["image"].startswith("apache/kafka")
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{broker}:9092"
        assert int(env["KAFKA_DEFAULT_REPLICATION_FACTOR"]) == 3
        assert int(env["KAFKA_MIN_INSYNC_REPLICAS"]) == 2
        assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == 3
        assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false"
        voters.add(env["KAFKA_CONTROLLER_QUORUM_VOTERS"])
        node_ids.add(env["KAFKA_NODE_ID"])
        assert services[broker]["volumes"][0].startswith(f"{broker}-data:")
    assert voters == {"1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"} and node_ids == {1, 2, 3}


def test_two_instances_of_every_stage_with_replicated_topics_and_idempotent_producers(compose):
    services = compose["services"]
    for stage in STAGES:
        service = services[stage]
        assert service["command"][:3] == ["worker", "--stage", stage]
        assert service["deploy"]["replicas"] == 2
        assert "healthcheck" in service
        env = service["environment"]
        assert env["P95_KAFKA__BOOTSTRAP_SERVERS"] == ",".join(f"{b}:9092" for b in BROKERS)
        assert env["P95_KAFKA__REPLICATION_FACTOR"] == "3"
        assert env["P95_KAFKA__IDEMPOTENT_PRODUCER"] == "true"
        assert int(env["P95_KAFKA__PARTITIONS"]) >= 4
        assert set(service["depends_on"]) >= set(BROKERS)


def test_one_notification_hub_and_one_compliance_monitor_on_the_cluster(compose):
    services = compose["services"]
    for stage in ("notifications", "compliance"):
        service = services[stage]
        assert service["command"][:3] == ["worker", "--stage", stage]
        assert service["deploy"]["replicas"] == 1
        assert set(service["depends_on"]) >= set(BROKERS)
    assert services["notifications"]["environment"]["P95_NOTIFY__URLS"] == "${P95_NOTIFY__URLS:-[]}"


def test_idempotence_is_off_by_default_for_tansu():
    assert KafkaSettings().idempotent_producer is False


def test_cluster_file_holds_no_literal_secrets():
    for line in CLUSTER.read_text().splitlines():
        if SECRET_KEYS.search(line.split(":")[0]) and ":" in line:
            value = line.split(":", 1)[1].strip()
            assert value == "" or "${" in value or value.startswith("&") or value.startswith("*"), line
