"""Stage worker processes: one process per stage, restarted when one exits unexpectedly.

Used by `p95 worker`, the demo, the end-to-end tests and the fault-injection harness (which kills
them with SIGKILL on purpose).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)
#: Set in the environment of the stage processes a WorkerSet starts: they wait for the stores
#: instead of failing fast (the set restarts them anyway).
SUPERVISED_ENV = "P95_SUPERVISED"
#: The line a stage worker logs once it has partitions (both consume loops log it on each assignment).
ASSIGNED = re.compile(r"stage \w+: assigned (?!nothing)")


@dataclass
class StageProcess:
    stage: str
    process: subprocess.Popen[bytes]
    log: Path
    started_at: float = field(default_factory=time.monotonic)
    restarts: int = 0
    #: Where this process's lines start in its log (the log is appended to across starts).
    log_start: int = 0


def instance_names(stages: Sequence[str], instances: int = 1) -> list[str]:
    """Process names: the stage itself with one instance; `risk-1`, `risk-2`, ... with several (all
    instances of a stage join the stage's one consumer group and share its partitions)."""
    if instances <= 1:
        return list(stages)
    return [f"{stage}-{index}" for stage in stages for index in range(1, instances + 1)]


def stage_of(name: str) -> str:
    """The stage an instance name (`risk-2`) runs."""
    stage, _, index = name.rpartition("-")
    return stage if stage and index.isdigit() else name


class WorkerSet:
    def __init__(
        self,
        stages: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        log_dir: Path,
        web_ports: dict[str, int] | None = None,
        log_level: str = "info",
        instances: int = 1,
    ):
        self.stages = list(dict.fromkeys(stages))  # a stage named twice runs once
        #: One process per name: a stage, or with `instances` > 1 each of its instances.
        self.names = instance_names(self.stages, instances)
        self.env = {**os.environ, **(env or {}), SUPERVISED_ENV: "1"}
        self.log_dir = Path(log_dir)
        self.web_ports = web_ports or {}
        self.log_level = log_level
        self.processes: dict[str, StageProcess] = {}

    def command(self, name: str) -> list[str]:
        stage = stage_of(name)
        command = [sys.executable, "-m", "phoenix95", "worker", "--stage", stage, "--log-level", self.log_level]
        if name in self.web_ports:
            command += ["--web-port", str(self.web_ports[name])]
        else:
            command += ["--no-web"]
        return command

    def start(self, stage: str | None = None) -> None:
        for name in [stage] if stage else self.names:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log = self.log_dir / f"worker-{name}.log"
            handle = open(log, "ab")  # noqa: SIM115 - the child owns it
            log_start = handle.tell()
            process = subprocess.Popen(
                self.command(name),
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
            )
            handle.close()
            previous = self.processes.get(name)
            self.processes[name] = StageProcess(
                name, process, log, restarts=(previous.restarts + 1) if previous else 0, log_start=log_start
            )
            logger.info("started %s worker (pid %d, log %s)", name, process.pid, log)

    def wait_assigned(self, timeout: float = 120.0) -> float:
        """Wait until every process logged its first assignment (it joined its group and reads its
        partitions); returns the seconds waited. TimeoutError naming the ones that did not."""
        started = time.monotonic()
        waiting = set(self.processes)
        while waiting:
            for name in sorted(waiting):
                entry = self.processes[name]
                with contextlib.suppress(OSError), open(entry.log, "rb") as log:
                    log.seek(entry.log_start)
                    if ASSIGNED.search(log.read().decode(errors="replace")):
                        waiting.discard(name)
            if waiting and time.monotonic() - started > timeout:
                raise TimeoutError(f"{', '.join(sorted(waiting))} did not join their groups within {timeout:.0f}s")
            if waiting:
                time.sleep(0.05)
        return time.monotonic() - started

    def pid(self, stage: str) -> int:
        return self.processes[stage].process.pid

    def alive(self, stage: str) -> bool:
        return stage in self.processes and self.processes[stage].process.poll() is None

    def kill(self, stage: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes[stage].process
        if process.poll() is None:
            os.kill(process.pid, sig)
            process.wait(timeout=30)

    def restart_dead(self) -> list[str]:
        restarted = []
        for name, entry in list(self.processes.items()):
            code = entry.process.poll()
            if code is not None:
                logger.warning("%s worker exited with %s; restarting", name, code)
                self.start(name)
                restarted.append(name)
        return restarted

    def stop(self, timeout: float = 20.0) -> None:
        for entry in self.processes.values():
            if entry.process.poll() is None:
                entry.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for entry in self.processes.values():
            remaining = max(0.1, deadline - time.monotonic())
            try:
                entry.process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                entry.process.kill()
                entry.process.wait(timeout=10)

    def supervise(self, *, poll: float = 1.0) -> None:
        """Run until SIGTERM/SIGINT; restart stages that exit."""
        stopping = False

        def on_signal(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        while not stopping:
            time.sleep(poll)
            if not stopping:
                self.restart_dead()
        self.stop()
