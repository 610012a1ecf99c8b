"""CPU seconds of the PostgreSQL backends serving a process: its TCP connections to the server's port,
matched to the backends whose process title names that client port (`postgres: ... 127.0.0.1(PORT)`).

PostgreSQL shares the machine's cores with the workers, so the statements a worker causes cost the
pipeline as much as its own CPU. Only local servers are seen (the backends must be processes here), and
a backend that exits inside the window is missed; reading them needs the rights to see their times.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_CLIENT_PORT = re.compile(r"\(\s*(\d+)\)")


def client_ports(pid: int, server_port: int) -> set[int]:
    """The local ports of `pid`'s TCP connections to `server_port`."""
    import psutil

    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return set()
    return {c.laddr.port for c in connections if c.raddr and c.raddr.port == server_port}


def backend_cpu(ports: Iterable[int]) -> dict[int, float]:
    """CPU seconds (user + system) of each local PostgreSQL backend serving one of `ports`, by its pid."""
    import psutil

    wanted = set(ports)
    found: dict[int, float] = {}
    if not wanted:
        return found
    for process in psutil.process_iter(["cmdline"]):
        try:
            title = " ".join(process.info["cmdline"] or ())
            if not title.startswith("postgres:"):
                continue
            match = _CLIENT_PORT.search(title)
            if match and int(match.group(1)) in wanted:
                found[process.pid] = sum(process.cpu_times()[:2])
        except (psutil.Error, OSError):
            continue
    return found


def listener_pid(port: int) -> int | None:
    """The local process listening on TCP `port` (the broker, PostgreSQL), if this user may see it."""
    import psutil

    try:
        for connection in psutil.net_connections(kind="tcp"):
            if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port and connection.pid:
                return int(connection.pid)
    except (psutil.Error, OSError):
        return None
    return None


def process_cpu(pid: int | None) -> float | None:
    """CPU seconds (user + system) of `pid` and its threads, None when it cannot be read."""
    import psutil

    if pid is None:
        return None
    try:
        return float(sum(psutil.Process(pid).cpu_times()[:2]))
    except (psutil.Error, OSError):
        return None


class BackendClock:
    """The PostgreSQL CPU a set of worker processes caused between `start()` and `stop()`."""

    def __init__(self, pids: dict[str, int], server_port: int = 5432):
        self.pids = pids
        self.server_port = server_port
        self._before: dict[str, dict[int, float]] = {}

    def _sample(self) -> dict[str, dict[int, float]]:
        return {name: backend_cpu(client_ports(pid, self.server_port)) for name, pid in self.pids.items()}

    def start(self) -> None:
        self._before = self._sample()

    def stop(self) -> dict[str, float]:
        after = self._sample()
        spent: dict[str, float] = {}
        for name, backends in after.items():
            before = self._before.get(name, {})
            spent[name] = round(sum(cpu - before.get(pid, 0.0) for pid, cpu in backends.items()), 2)
        return spent
