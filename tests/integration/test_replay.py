"""Replay: deterministic, the same digest in-process and through the real Kafka pipeline, what-ifs that
change the results without touching the live tables, and cleanup of a kafka-mode run."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from phoenix95.cli.main import app
from phoenix95.storage.postgres import Database, migrate

pytestmark = pytest.mark.integration


def replay(*args: str) -> dict:
    result = CliRunner().invoke(app, ["replay", "--signals", "sample", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


async def _table_counts(url: str, schema: str) -> dict[str, int]:
    async with Database(url, schema=schema) as db:
        counts = {}
        for table in ("signals", "risk_verdicts", "orders", "positions"):
            counts[table] = (await db.fetch(f"SELECT COUNT(*) FROM {table}"))[0][0]
        return counts


def test_replay_is_deterministic_and_kafka_mode_matches_inprocess(namespace, services):
    first = replay()
    again = replay()
    assert first["digest"] == again["digest"]
    assert first["orders"] > 20 and first["trades"] > 20
    assert set(first["close_reasons"]) >= {"stop_loss", "take_profit"}

    asyncio.run(migrate(services.postgres, namespace.schema))
    live_before = asyncio.run(_table_counts(services.postgres, namespace.schema))
    kafka = replay("--mode", "kafka")
    assert kafka["digest"] == first["digest"]
    assert (kafka["orders"], kafka["trades"], kafka["pnl"]) == (first["orders"], first["trades"], first["pnl"])
    run_schema = kafka["run_id"]
    assert asyncio.run(_table_counts(services.postgres, run_schema))["orders"] == first["orders"]
    assert asyncio.run(_table_counts(services.postgres, namespace.schema)) == live_before

    cleaned = CliRunner().invoke(app, ["replay", "clean", run_schema])
    assert cleaned.exit_code == 0, cleaned.output
    with pytest.raises(Exception, match="does not exist"):
        asyncio.run(_table_counts(services.postgres, run_schema))


def test_a_what_if_run_changes_the_results(namespace):
    base = replay()
    lower = replay("--set", "risk.leverage=10", "--set", "risk.kelly_fraction=0.1")
    assert lower["digest"] != base["digest"]
    assert lower["settings"] == {"P95_RISK__LEVERAGE": "10", "P95_RISK__KELLY_FRACTION": "0.1"}
    assert lower["pnl"] != base["pnl"]


def test_replay_writes_a_self_contained_html_report(tmp_path):
    path = tmp_path / "report.html"
    summary = replay("--report", str(path))
    text = path.read_text()
    assert summary["report"] == str(path)
    assert "<svg id='equity-curve'" in text and "<polyline" in text
    assert "http://" not in text and "https://" not in text and "<script" not in text


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium is not installed (`make test` installs Debian's chromium when run as root); "
    "manual check: chromium --headless --no-sandbox --screenshot=report.png --window-size=1200,1400 file://$PWD/report.html",
)
def test_the_report_renders_its_equity_curve_in_headless_chromium(tmp_path):
    from tests.png import pixels

    report = tmp_path / "report.html"
    replay("--report", str(report))
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            "--window-size=1200,1400",
            report.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    width, height, image = pixels(shot)
    assert (width, height) == (1200, 1400)
    # the equity curve is drawn in #1f77b4: count the pixels of that blue (anti-aliasing shades the rest)
    blue = sum(1 for r, g, b in image if abs(r - 0x1F) < 24 and abs(g - 0x77) < 24 and abs(b - 0xB4) < 24)
    assert blue > 400, f"only {blue} pixels of the equity curve's colour in the screenshot"
