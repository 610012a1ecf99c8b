"""Every `p95` command, read from the Typer app (sub-apps included, so a new command is covered as
soon as it is registered), against the states a new user meets: no stack, an unmigrated database,
and each one service stopped. No output may contain a traceback; each exit status is 0 or 2 (with a
message), or what the command's sample allows (`status` and `doctor` report failures with 1).

How a command is run:
- in process with click's CliRunner, through `phoenix95.cli.main.main` (the exception mapping), when
  it ends by itself in that state;
- as a subprocess, `python -m phoenix95 ...`, where it would run until stopped (a worker, the webhook
  in a state it can serve in): stopped with SIGTERM once it registered itself (`$P95_HOME/components`),
  or when it changes the process environment (the demo).

A command with no sample runs with no arguments, as a subprocess, within UNSAMPLED_TIMEOUT_S; one
with required arguments and no sample fails the test with the line to add to SAMPLES.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import typer.main
from click.testing import CliRunner

from phoenix95.cli.main import app, main
from phoenix95.data import samples as samples_package
from phoenix95.settings import get_settings
from tests.conftest import Namespace, cleanup_namespace, make_namespace
from tests.services import ServiceSet

pytestmark = pytest.mark.integration

SCENARIOS = ("no_stack", "unmigrated", "broker_down", "postgres_down", "redis_down", "timeseries_down")
#: The states in which a store the pipeline needs is unreachable or not there.
BROKEN = ("no_stack", "broker_down", "postgres_down", "redis_down")
UNSAMPLED_TIMEOUT_S = 20.0
STARTED_TIMEOUT_S = 90.0  # a hang guard (a loaded machine imports Faust slowly), not a speed check
SAMPLE_SIGNALS = str(Path(samples_package.__file__).parent / "xrpusdt-signals.jsonl")
SECRET = "a-test-secret-that-is-long-enough"


@dataclass(frozen=True)
class Sample:
    """How to run one command: its arguments (`{port}` is a free port), the scenarios in which it
    runs until stopped, those it is not run in (with the reason) and the exit statuses allowed."""

    args: tuple[str, ...] = ()
    runs_forever_in: frozenset[str] = frozenset()
    subprocess: bool = False
    skip: Mapping[str, str] = field(default_factory=dict)
    codes: frozenset[int] = frozenset({0, 2})


STARTS_STACK = "starts the embedded stack there (test_embedded_stack_and_demo.py)"
NO_SERVICE = "uses no service (in-process replay): as in no_stack, which runs it"
NOT_USED_BY_WEBHOOK = "the webhook uses neither PostgreSQL nor the time series: as in unmigrated, where it runs"
DEMO_RUNS = "runs the whole demo there (tests/integration/test_embedded_stack_and_demo.py)"
SAMPLES: dict[str, Sample] = {
    "up": Sample(skip={"no_stack": STARTS_STACK}),
    "status": Sample(codes=frozenset({0, 1, 2})),  # 1: something is down (a report)
    "down": Sample(),
    "doctor": Sample(codes=frozenset({0, 1, 2})),  # 1: a required check failed (a report)
    # a real worker where it starts (until it registered); elsewhere everything up to Faust (--check)
    "worker": Sample(
        ("--stage", "analysis", "--web-port", "{port}"),
        runs_forever_in=frozenset({"unmigrated"}),
        skip={"timeseries_down": "it would run there: `worker --check` (MORE_SAMPLES) goes up to Faust instead"},
    ),
    "demo": Sample(
        ("--timeout", "20"), skip={"no_stack": STARTS_STACK, "unmigrated": DEMO_RUNS, "timeseries_down": DEMO_RUNS}
    ),
    "publish": Sample((SAMPLE_SIGNALS, "--timeout", "3")),
    "serve": Sample(
        ("--port", "{port}"),
        runs_forever_in=frozenset({"unmigrated"}),
        skip=dict.fromkeys(("postgres_down", "timeseries_down"), NOT_USED_BY_WEBHOOK),
    ),
    "tap": Sample(("p95.signals", "--exit-at-end", "--count", "5")),
    "lag": Sample(codes=frozenset({0, 1, 2})),  # 1: a group is not OK (a report)
    "halt": Sample(("--reason", "error test")),
    "reduce": Sample(("--reason", "error test")),
    "resume": Sample(("--reason", "error test")),
    "state": Sample(),
    "bench": Sample(("--only", "no-such-scenario")),
    "config show": Sample(),
    "db migrate": Sample(),
    "risk quote": Sample(("--symbol", "BTCUSDT", "--side", "long", "--price", "60000", "--confidence", "0.8")),
    "dlq list": Sample(),
    "dlq replay": Sample(("--dry-run",)),
    "redis rebuild": Sample(),
    "influx setup": Sample(),
    "replay": Sample(("--signals", "sample", "--json"), skip=dict.fromkeys(SCENARIOS[1:], NO_SERVICE)),
    "replay clean": Sample(("no-such-run",)),
    "notify list": Sample(),
    "notify retry": Sample(),
    "notify test": Sample(),
    "feed simulate": Sample(("--symbols", "XRPUSDT", "--count", "1", "--port", "{port}")),
    "feed binance": Sample(("--symbols", "BTCUSDT", "--duration", "2"), subprocess=True),
    "api": Sample(("--port", "{port}"), subprocess=True),
    "api key create": Sample(("--role", "viewer")),
    "api key revoke": Sample(("k-no-such-key",)),
    "api key list": Sample(),
    "dashboard": Sample(("--port", "{port}"), subprocess=True),
    "dashboard user add": Sample(("errortest", "--role", "viewer", "--password-env", "P95_TEST_DASHBOARD_PASSWORD")),
    "dashboard login-link": Sample(),
    "audit verify": Sample(codes=frozenset({0, 1, 2})),  # 1: the chain is broken (a report)
    "audit anchor": Sample(),
    "audit export": Sample(),
    "compliance report": Sample(),
    "exchange check": Sample(codes=frozenset({0, 1, 2})),  # 1: a check failed (a report)
    "exchange reconcile": Sample(codes=frozenset({0, 1, 2})),  # 1: differences found (a report)
}

#: More invocations of a command than its sample.
MORE_SAMPLES: list[tuple[str, Sample]] = [
    ("worker", Sample(("--stage", "analysis", "--check"), skip={"unmigrated": "the real worker runs there"})),
]


def invocations() -> list[tuple[str, list[str], Sample | None]]:
    """(command path, required parameters, sample) for every command and extra sample."""
    found = commands()
    runs = [(path, required, SAMPLES.get(path)) for path, required in sorted(found.items())]
    return runs + [(path, found.get(path, []), sample) for path, sample in MORE_SAMPLES]


def commands() -> dict[str, list[str]]:
    """Every command of the app: its path (`db migrate`) and required parameters."""
    found: dict[str, list[str]] = {}

    def walk(command: object, path: list[str]) -> None:
        children = getattr(command, "commands", None)
        if children:
            if getattr(command, "invoke_without_command", False) and path:
                found[" ".join(path)] = []
            for name, child in children.items():
                walk(child, [*path, name])
        else:
            params = getattr(command, "params", [])
            found[" ".join(path)] = [p.name for p in params if getattr(p, "required", False)]

    walk(typer.main.get_command(app), [])
    return found


def test_every_command_has_a_sample_or_runs_without_arguments():
    missing = [
        f'    "{path}": Sample((...)),  # requires {", ".join(req)}'
        for path, req in commands().items()
        if req and path not in SAMPLES
    ]
    assert not missing, (
        "these commands need arguments: add a sample for each to SAMPLES in tests/integration/test_cli_errors.py\n"
        + "\n".join(missing)
    )
    stale = (set(SAMPLES) | {path for path, _ in MORE_SAMPLES}) - set(commands())
    assert not stale, f"SAMPLES names commands that no longer exist: {sorted(stale)}"


# -- scenarios -------------------------------------------------------------------------------------------


def closed_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def prepared(services: ServiceSet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Namespace]:
    """A namespace with its schema migrated and its topics created (the base of 'one service stopped')."""
    from phoenix95.stack.ready import make_ready

    ns = make_namespace(services, tmp_path_factory.mktemp("errors-home"))
    with pytest.MonkeyPatch.context() as patch:
        for key, value in ns.env.items():
            patch.setenv(key, value)
        get_settings.cache_clear()
        make_ready(get_settings())
    get_settings.cache_clear()
    yield ns
    cleanup_namespace(services, ns)


def scenario_env(
    name: str, services: ServiceSet, prepared: Namespace, home: Path, created: list[Namespace]
) -> dict[str, str | None]:
    """The P95_ variables of a scenario (None: unset); fresh namespaces go to `created`."""
    dead = f"127.0.0.1:{closed_port()}"
    if name == "no_stack":  # nothing configured; the broker's default address made unreachable here
        return {
            "P95_HOME": str(home),
            "P95_NAMESPACE": prepared.name,
            "P95_KAFKA__BOOTSTRAP_SERVERS": dead,
            "P95_POSTGRES__URL": None,
            "P95_REDIS__URL": None,
            "P95_INFLUX__URL": None,
        }
    if name == "unmigrated":
        fresh = make_namespace(services, home)
        created.append(fresh)
        return {**fresh.env, "P95_POSTGRES__DB_SCHEMA": fresh.name}
    env: dict[str, str | None] = {**prepared.env, "P95_HOME": str(home)}
    if name == "broker_down":
        env["P95_KAFKA__BOOTSTRAP_SERVERS"] = dead
    elif name == "postgres_down":
        env["P95_POSTGRES__URL"] = f"postgresql://postgres@{dead}/test"
    elif name == "redis_down":
        env["P95_REDIS__URL"] = f"redis://{dead}/0"
    elif name == "timeseries_down":
        env["P95_INFLUX__URL"] = f"http://{dead}"
        env["P95_INFLUX__ENABLED"] = "true"
    return env


@dataclass
class Outcome:
    command: str
    code: int | None
    output: str
    how: str


class _Main:
    """Lets CliRunner run `main()` (the exception mapping) instead of the bare Typer app."""

    name = "p95"

    def main(self, args: list[str], prog_name: str | None = None, **extra: object) -> None:
        main(list(args))


def run_in_process(argv: list[str], env: Mapping[str, str | None]) -> Outcome:
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            if value is None:
                patch.delenv(key, raising=False)
            else:
                patch.setenv(key, value)
        get_settings.cache_clear()
        try:
            result = CliRunner().invoke(_Main(), argv)  # type: ignore[arg-type]
        finally:
            get_settings.cache_clear()
    output = result.output + (
        result.stderr if result.stderr_bytes is not None and result.stderr not in result.output else ""
    )
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        output += "".join(traceback.format_exception(result.exception))
    return Outcome(" ".join(argv), result.exit_code, output, "in process")


def run_subprocess(
    argv: list[str], env: Mapping[str, str | None], home: Path, *, until_started: bool, timeout: float
) -> Outcome:
    full = {k: v for k, v in os.environ.items() if k not in env}
    full.update({k: v for k, v in env.items() if v is not None})
    full["P95_HOME"] = str(home)
    process = subprocess.Popen(
        [sys.executable, "-m", "phoenix95", *argv],
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    started = False
    while process.poll() is None and time.monotonic() < deadline:
        if until_started and any((home / "components").glob("*.json")):
            started = True
            time.sleep(0.5)
            break
        time.sleep(0.1)
    timed_out = process.poll() is None and not started
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    output = process.stdout.read() if process.stdout else ""
    if timed_out:
        return Outcome(" ".join(argv), None, output, f"subprocess: still running after {timeout:.0f}s")
    return Outcome(" ".join(argv), 0 if started else process.returncode, output, "subprocess")


def free_port() -> int:
    return closed_port()


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_command_prints_a_traceback(scenario, services, prepared, tmp_path, monkeypatch, request):
    monkeypatch.setenv("P95_WEBHOOK__SECRETS", f'{{"tradingview": "{SECRET}"}}')
    monkeypatch.setenv("P95_TEST_DASHBOARD_PASSWORD", "a-test-password-long-enough")
    monkeypatch.setenv("COLUMNS", "300")  # rich wraps at 80 columns otherwise
    failures = []
    ran = []
    created: list[Namespace] = []
    request.addfinalizer(lambda: [cleanup_namespace(services, ns) for ns in created])
    for index, (path, required, sample) in enumerate(invocations()):
        if sample is None and required:
            continue  # test_every_command_has_a_sample_or_runs_without_arguments says which
        sample = sample or Sample(subprocess=True)
        if scenario in sample.skip:
            continue
        home = tmp_path / f"home-{index}"
        home.mkdir()
        env = scenario_env(scenario, services, prepared, home, created)
        argv = [*path.split(), *(a.replace("{port}", str(free_port())) for a in sample.args)]
        began = time.monotonic()
        if scenario in sample.runs_forever_in or sample.subprocess or path not in SAMPLES:
            timeout = STARTED_TIMEOUT_S if path in SAMPLES else UNSAMPLED_TIMEOUT_S
            outcome = run_subprocess(argv, env, home, until_started=True, timeout=timeout)
        else:
            outcome = run_in_process(argv, env)
        ran.append(path)
        print(
            f"{scenario}: p95 {' '.join(argv)} -> {outcome.code} ({outcome.how}, {time.monotonic() - began:.1f}s)",
            flush=True,
        )
        problem = judge(outcome, sample)
        if problem:
            hint = "" if path in SAMPLES else " (no sample: add one to SAMPLES)"
            failures.append(f"p95 {outcome.command} [{outcome.how}]{hint}: {problem}\n{outcome.output[-1500:]}")
    assert ran
    assert not failures, f"scenario {scenario}:\n" + "\n\n".join(failures)


def judge(outcome: Outcome, sample: Sample) -> str | None:
    if outcome.code is None:
        return outcome.how
    if "Traceback" in outcome.output:
        return "printed a traceback"
    if outcome.code not in sample.codes:
        return f"exit status {outcome.code}, expected one of {sorted(sample.codes)}"
    if outcome.code != 0 and not outcome.output.strip():
        return f"exit status {outcome.code} without a message"
    if outcome.code == 2:
        message = outcome.output[outcome.output.rfind("error:") :] if "error:" in outcome.output else ""
        lines = [line for line in message.splitlines() if line.strip()]
        if not 1 <= len(lines) <= 3:
            return f"exit status 2 with {len(lines)} lines of message (want one or two)"
    return None
