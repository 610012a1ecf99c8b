"""Expected failures are one or two lines on stderr and exit status 2, never a traceback; an unexpected
one is one line and exit status 1, with its traceback only under `--log-level DEBUG`."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from phoenix95.cli.main import app, main
from phoenix95.settings import get_settings


class _Main:
    name = "p95"

    def main(self, args: list[str], prog_name: str | None = None, **extra: object) -> None:
        main(list(args))


def p95(*args: str):  # type: ignore[no-untyped-def]
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(_Main(), list(args))  # type: ignore[arg-type]
    finally:
        get_settings.cache_clear()


def assert_clear(result, *expected: str) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    message = result.stderr[result.stderr.index("error:") :]
    assert 1 <= len([line for line in message.splitlines() if line.strip()]) <= 2, message
    for text in expected:
        assert text in " ".join(result.stderr.split()), result.stderr


def test_an_invalid_setting_is_named_by_its_variable(monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    monkeypatch.setenv("P95_KAFKA__PARTITIONS", "zero")
    assert_clear(p95("config", "show"), "invalid setting P95_KAFKA__PARTITIONS='zero'")


def test_a_missing_file_is_named(tmp_path: Path):
    assert_clear(p95("publish", str(tmp_path / "nope.jsonl")), "nope.jsonl")
    assert_clear(p95("replay", "--signals", str(tmp_path / "nope.jsonl")), "nope.jsonl")


def test_an_unknown_symbol_is_named(monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    assert_clear(p95("feed", "simulate", "--symbols", "FOOUSDT", "--count", "1"), "unknown symbol(s) FOOUSDT")
    quote = p95(
        "risk", "quote", "--symbol", "FOOUSDT", "--side", "long", "--price", "1", "--confidence", "0.8", "--offline"
    )
    assert_clear(quote, "FOOUSDT")


def test_the_stack_not_running_says_p95_up(monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    monkeypatch.delenv("P95_REDIS__URL", raising=False)
    monkeypatch.delenv("P95_POSTGRES__URL", raising=False)
    assert_clear(p95("state"), "the stack is not running", "p95 up")


@pytest.fixture
def broken_command():  # type: ignore[no-untyped-def]
    @app.command("explode-for-test", hidden=True)
    def explode() -> None:
        raise ValueError("a bug")

    yield
    app.registered_commands[:] = [c for c in app.registered_commands if c.name != "explode-for-test"]


def test_an_unexpected_error_is_one_line_and_its_traceback_needs_debug(broken_command):
    plain = p95("explode-for-test")
    assert plain.exit_code == 1 and "Traceback" not in plain.output
    assert "unexpected ValueError: a bug" in plain.stderr and "--log-level DEBUG" in plain.stderr
    debug = p95("--log-level", "DEBUG", "explode-for-test")
    assert isinstance(debug.exception, ValueError)  # re-raised: Typer prints it with its traceback
