"""The dashboard in a real browser (Debian's chromium driven by Playwright) with the four real workers
running: log in; a position opened by a published signal appears on the Positions page within 2 s of
being written; its mark price changes with the next price; Halt (confirm dialog) changes the trading
state; the next signal is rejected with TRADING_HALTED and shows so on the Signals page. Each page is
screenshotted, checked non-blank with its headings, and no console error is logged. The Overview and
Positions screenshots with live data are kept in $P95_SCREENSHOT_DIR (default: /tmp)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from phoenix95.api.accounts import add_user
from phoenix95.api.app import create_app as create_api
from phoenix95.dashboard.app import create_app
from phoenix95.settings import get_settings
from tests import factories
from tests.dashboard_server import serve
from tests.pipeline import Pipeline
from tests.png import pixels

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
SHOTS = Path(os.environ.get("P95_SCREENSHOT_DIR", "/tmp"))
XSS = "<script>window.__xss=1</script>"
HEADINGS = {
    "/": ["Overview", "Equity curve", "Trading state", "Exposure per symbol", "Pipeline health"],
    "/positions": ["Positions", "Open", "Closed"],
    "/signals": ["Signals"],
    "/risk": ["Risk", "Rejections by reason over time", "Kelly sizes"],
    "/backtests": ["Backtests", "Reports"],
}


def now() -> datetime:
    return datetime.now(UTC)


def run(coroutine):
    """asyncio.run in a thread: Playwright's sync API keeps an event loop running in this one."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _add_user() -> str:
    from phoenix95.api.accounts import create_key
    from phoenix95.storage.postgres import Database

    settings = get_settings()
    async with Database(settings.postgres_url(), schema=settings.postgres.db_schema) as db:
        await add_user(db, "alice", "correct horse battery", "operator")
        return (await create_key(db, "viewer", created_by="test"))[1]


async def _wait_row(pipeline: Pipeline, query: str, params: tuple, what: str) -> tuple:
    found: list[tuple] = []

    async def check(db) -> bool:
        found[:] = await db.fetch(query, params)
        return bool(found)

    await pipeline.wait_for(check, timeout=90, what=what)
    return found[0]


def non_blank(path: Path) -> None:
    width, height, rgb = pixels(path)
    assert width > 600 and height > 400
    distinct = len(set(rgb[:: max(1, len(rgb) // 20000)]))
    assert distinct > 20, f"{path} looks blank ({distinct} colours)"


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (`make browser` installs it when run as root)",
)
def test_live_positions_halt_and_rejection_in_a_real_browser(namespace, tmp_path) -> None:
    pipeline = Pipeline(namespace)
    pipeline.start()
    errors: list[str] = []
    try:
        key = run(_add_user())
        settings = get_settings()
        with (
            serve(create_app(settings)) as url,
            serve(create_api(settings)) as api_url,
            playwright_api.sync_playwright() as play,
        ):
            browser = play.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("dialog", lambda dialog: dialog.accept())

            page.goto(url + "/login")
            page.fill("input[name=username]", "alice")
            page.fill("input[name=password]", "correct horse battery")
            page.click("form:has(input[name=username]) button[type=submit]")
            page.wait_for_url(url + "/")
            page.goto(url + "/positions")
            page.wait_for_selector("#open-positions >> text=No open positions.")

            run(pipeline.publish([factories.price(value="1.19", at=now(), namespace=namespace.name)]))
            signal = factories.signal(action="buy", confidence="0.9", at=now())
            # a strategy name that would run script if any page interpolated it unescaped
            hostile = factories.signal(action="sell", confidence="0.2", at=now(), strategy=XSS)
            run(pipeline.publish([signal, hostile]))
            run(pipeline.publish([factories.price(value="1.19", at=now(), namespace=namespace.name)]))
            (position_id,) = run(
                _wait_row(
                    pipeline,
                    "SELECT position_id::text FROM positions WHERE signal_id = %s",
                    (signal.signal_id,),
                    "the position of the published signal",
                )
            )
            written = time.monotonic()
            row = page.locator(f"#position-{position_id}")
            row.wait_for(timeout=2000)  # within 2 s of the position being written
            appeared = time.monotonic() - written
            first_mark = row.locator(".mark").inner_text()

            marked = False
            for value in ("1.2050", "1.2100", "1.2150", "1.2200"):
                time.sleep(1.1)  # marks are published at most once a second of event time
                run(pipeline.publish([factories.price(value=value, at=now(), namespace=namespace.name)]))
                try:
                    page.wait_for_function(
                        "([id, old]) => { const c = document.querySelector('#position-' + id + ' .mark');"
                        " return c && c.textContent.trim() !== old; }",
                        arg=[position_id, first_mark],
                        timeout=3000,
                    )
                    marked = True
                    break
                except playwright_api.TimeoutError:
                    continue
            assert marked, f"the mark price stayed {first_mark}"
            new_mark = page.locator(f"#position-{position_id} .mark").inner_text()
            page.screenshot(path=str(SHOTS / "p95-dashboard-positions.png"), full_page=True)

            page.goto(url + "/")
            page.wait_for_selector("#trading-state-value >> text=ACTIVE")
            page.fill("input[name=reason]", "browser halt")
            page.click("#halt-button")
            page.wait_for_selector("#trading-state-value >> text=HALTED", timeout=5000)
            assert "user:alice" in page.locator("#trading-state").inner_text()
            page.wait_for_selector("#open-count >> text=1")
            time.sleep(0.5)  # the risk stage reads the state at most every 0.2 s
            page.screenshot(path=str(SHOTS / "p95-dashboard-overview.png"), full_page=True)

            rejected = factories.signal(action="buy", confidence="0.9", at=now())
            run(pipeline.publish([rejected]))
            decision, reasons = run(
                _wait_row(
                    pipeline,
                    "SELECT decision, reasons FROM risk_verdicts WHERE signal_id = %s",
                    (rejected.signal_id,),
                    "the verdict on the signal after the halt",
                )
            )
            assert (decision, reasons) == ("REJECTED", ["TRADING_HALTED"])
            page.goto(url + "/signals")
            page.locator(f"text={XSS}").first.wait_for(timeout=10000)  # shown as text
            assert page.evaluate("window.__xss") is None
            page.goto(url + f"/signals/{hostile.signal_id}")
            page.wait_for_selector("#trace-conclusion", timeout=30000)
            assert XSS in page.locator("table.kv").inner_text() and page.evaluate("window.__xss") is None
            page.goto(url + "/signals")
            newest = page.locator("#signals tbody tr").first
            assert rejected.signal_id[:13] in newest.inner_text()
            assert "REJECTED" in newest.inner_text() and "TRADING_HALTED" in newest.inner_text()
            newest.locator("a").click()
            page.wait_for_selector("h1 >> text=Signal trace")
            page.wait_for_selector("#trace-conclusion", timeout=30000)
            assert "TRADING_HALTED" in page.locator("#trace-conclusion").inner_text()

            # the API's broker-backed endpoints on the same live pipeline: the trace and the lag per stage
            api = httpx.Client(base_url=api_url, timeout=60, headers={"X-API-Key": key})
            trace = api.get(f"/v1/signals/{rejected.signal_id}/trace").json()
            assert "TRADING_HALTED" in trace["conclusion"]
            first_step = trace["steps"][0]
            assert first_step["stage"] == "analysis" and first_step["sightings"][0]["offset"] >= 0
            opened = api.get(f"/v1/signals/{signal.signal_id}/trace").json()
            assert [bool(step["sightings"]) for step in opened["steps"]] == [True] * 5  # signal .. position ticks
            for _ in range(60):
                lag = api.get("/v1/lag")
                if lag.status_code == 200:
                    break
                time.sleep(0.5)
            assert lag.status_code == 200, lag.text
            assert {g["stage"] for g in lag.json()["groups"]} == {"analysis", "risk", "execution", "positions"}
            assert all(g["status"] in ("OK", "WARN", "ERR") and g["lag"] >= 0 for g in lag.json()["groups"])

            for path, headings in HEADINGS.items():
                page.goto(url + path)
                shot = tmp_path / f"page{path.replace('/', '-') or '-'}.png"
                page.screenshot(path=str(shot), full_page=True)
                non_blank(shot)
                found = page.locator("h1, h2").all_inner_texts()
                assert page.evaluate("window.__xss") is None, path
                for heading in headings:
                    assert any(text.strip().startswith(heading) for text in found), (path, heading, found)
            browser.close()
        for name in ("p95-dashboard-positions.png", "p95-dashboard-overview.png"):
            non_blank(SHOTS / name)
    finally:
        pipeline.stop()
    assert errors == []
    print(f"position row appeared {appeared:.2f} s after the write; mark {first_mark} -> {new_mark}")
