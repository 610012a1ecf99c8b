"""`p95 demo`: the whole pipeline on the embedded stack, with real XRPUSDT candles.

It runs in its own namespace (topics, consumer groups, PostgreSQL schema, Redis prefix and a
time-series tag), so a demo never mixes with other data, and counts everything it reports from the
stores and topics themselves.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from rich.console import Console

from phoenix95.connectors.market_data import GbmFeed, bundled_candle_events, merge_by_time
from phoenix95.schemas.codec import Codec
from phoenix95.schemas.messages import MarketPrice, Signal
from phoenix95.schemas.signal_input import build_signal
from phoenix95.schemas.topics import Topics
from phoenix95.settings import Settings, get_settings
from phoenix95.stack.manager import Stack
from phoenix95.streams.stages import default_stages

SETTLE_TIMEOUT_S = 240.0


@dataclass(frozen=True)
class DemoSignal:
    hours: float
    symbol: str
    action: str
    confidence: str
    rsi: str | None = None
    macd: str | None = None
    strategy: str = "demo-momentum"
    timeframe: str = "5m"


#: Valid sample signals (hours after the first candle). Some pass the risk checks, some do not.
VALID_SIGNALS: tuple[DemoSignal, ...] = (
    DemoSignal(2, "XRPUSDT", "buy", "0.85", rsi="45", macd="0.002"),
    DemoSignal(6, "XRPUSDT", "sell", "0.80", rsi="62", macd="-0.001"),
    DemoSignal(10, "XRPUSDT", "buy", "0.30"),
    DemoSignal(14, "XRPUSDT", "long", "0.92", rsi="35"),
    DemoSignal(20, "XRPUSDT", "short", "0.20"),
    DemoSignal(26, "XRPUSDT", "buy", "0.75", rsi="82"),
    DemoSignal(33, "XRPUSDT", "sell", "0.88", macd="-0.004"),
    DemoSignal(40, "XRPUSDT", "buy", "0.66"),
    DemoSignal(52, "XRPUSDT", "buy", "0.95", rsi="40", macd="0.001"),
    DemoSignal(52.005, "XRPUSDT", "buy", "0.95", rsi="40", macd="0.001"),  # same strategy again 18 s later
    DemoSignal(70, "XRPUSDT", "short", "0.90", rsi="71"),
    DemoSignal(96, "XRPUSDT", "buy", "0.83"),
    DemoSignal(3, "BTCUSDT", "buy", "0.90", rsi="50", macd="12.5"),
    DemoSignal(15, "BTCUSDT", "sell", "0.35"),
    DemoSignal(30, "BTCUSDT", "short", "0.86", rsi="68"),
    DemoSignal(60, "BTCUSDT", "long", "0.78", macd="-30"),
    DemoSignal(90, "BTCUSDT", "buy", "0.97", rsi="28"),
    DemoSignal(4, "ETHUSDT", "sell", "0.82", rsi="74"),
    DemoSignal(18, "ETHUSDT", "buy", "0.24"),
    DemoSignal(36, "ETHUSDT", "buy", "0.91", rsi="55", macd="1.2"),
    DemoSignal(72, "ETHUSDT", "short", "0.70"),
    DemoSignal(110, "ETHUSDT", "long", "0.89", rsi="31"),
)
#: Malformed sample messages for p95.signals: every one must land in the dead-letter topic.
MALFORMED: tuple[tuple[str, bytes], ...] = (
    ("invalid JSON", b'{"symbol": "XRPUSDT", "action": "buy", "price": '),
    ("unknown action", b'{"symbol": "XRPUSDT", "action": "hold", "price": "1.10"}'),
    ("negative price", b'{"symbol": "BTCUSDT", "action": "buy", "price": "-5"}'),
    ("unknown symbol", b'{"symbol": "FOOBARUSDT", "action": "buy", "price": "1"}'),
    ("empty message", b""),
)


def run_demo(
    *, keep: bool = False, timeout: float = SETTLE_TIMEOUT_S, progress: Console | None = None
) -> dict[str, Any]:
    started = time.monotonic()
    say = (lambda message: progress.print(message)) if progress is not None else (lambda message: None)
    base = get_settings()
    stack = Stack(base.home, timeseries_retention_days=base.influx.retention_days)
    before = stack.status() if stack.path.exists() else {}
    say("[bold]Phoenix95 demo[/bold]: starting the embedded stack")
    endpoints = stack.up(on_step=lambda message: say(f"  [dim]{message}[/dim]"))
    started_here = [name for name, e in endpoints.items() if e.managed and not before.get(name, {}).get("healthy")]
    namespace = "demo" + datetime.now().strftime("%Y%m%d%H%M%S")
    env = {
        "P95_HOME": str(base.home),
        "P95_NAMESPACE": namespace,
        "P95_POSTGRES__DB_SCHEMA": namespace,
        "P95_REDIS__PREFIX": f"{namespace}:s4:",
        "P95_RISK__CLOCK": "event",
        "P95_EXECUTION__QUIET_FEED_FILL_AFTER_S": "5",
    }
    from phoenix95.stack.ready import check_reachable

    url = {name: endpoint.url for name, endpoint in endpoints.items()}
    check_reachable(url.get("kafka"), url.get("postgres"), url.get("redis"))  # fail fast: before anything starts
    for name, endpoint in endpoints.items():
        if endpoint.url:
            key = {
                "kafka": "P95_KAFKA__BOOTSTRAP_SERVERS",
                "postgres": "P95_POSTGRES__URL",
                "redis": "P95_REDIS__URL",
                "timeseries": "P95_INFLUX__URL",
            }[name]
            env[key] = endpoint.url
    os.environ.update(env)
    get_settings.cache_clear()
    settings = get_settings()
    from phoenix95.streams.supervisor import WorkerSet
    from phoenix95.streams.wiring import prepare

    prepare(settings)
    stages = default_stages(settings)  # with the notification hub when P95_NOTIFY__URLS is set
    if "notifications" in stages:
        from phoenix95.cli.worker import check_notify_config

        check_notify_config(settings)
    workers = WorkerSet(stages, env=env, log_dir=settings.home / "logs" / namespace)
    summary: dict[str, Any] = {}
    try:
        say(f"starting the workers ({', '.join(stages)}) in namespace [cyan]{namespace}[/cyan]")
        workers.start()
        published = asyncio.run(_publish(settings, say))
        say(
            f"published {published['prices']} market prices and {published['signals']} signals "
            f"({published['malformed']} malformed); waiting for every signal to reach its final state"
        )
        settled = asyncio.run(_wait_settled(settings, timeout, workers))
        summary = asyncio.run(_summary(settings))
        if "notifications" in stages:
            from phoenix95.notify.progress import wait_delivered

            say("waiting for the notifications to be delivered")
            summary["notifications"] = asyncio.run(wait_delivered(settings, timeout))
        summary["elapsed_s"] = round(time.monotonic() - started, 1)
        summary["namespace"] = namespace
        if not settled:
            summary["error"] = f"not every signal reached its final state within {timeout:.0f}s"
    finally:
        workers.stop()
        if started_here and not keep:
            say("stopping the embedded stack")
            stack.down()
    if keep and summary:
        summary["dashboard"] = _dashboard_login(namespace)
    if progress is not None:
        _print_summary(progress, summary)
    if keep and summary and not summary.get("error"):
        console = progress or Console(stderr=True)
        for line in next_steps(namespace, summary.get("trace_signal_id") or f"{namespace}-signal-000"):
            console.print(line, highlight=False, soft_wrap=True)
        if summary.get("dashboard"):
            console.print(
                f"  dashboard: run {summary['dashboard']['command']}\n"
                f"  then open (one-time login, valid 1 h): {summary['dashboard']['login_url']}",
                highlight=False,
                soft_wrap=True,
            )
    return summary


def next_steps(namespace: str, signal_id: str) -> list[str]:
    """What to try after `p95 demo --keep`: the demo's data stays in its namespace on the running stack."""
    ns = f"P95_NAMESPACE={namespace}"
    return [
        f"[bold]Next[/bold] (the stack is still running; the demo's data is in namespace {namespace}):",
        f"  {ns} p95 tap p95.positions.ticks --exit-at-end --count 10   # messages on a topic",
        f"  {ns} p95 lag                                                 # each stage's consumer lag",
        f"  {ns} p95 tap --trace {signal_id}     # one demo signal through every stage",
        "  p95 replay --signals sample --report replay-report.html      # the replay report (HTML)",
        "  p95 down                                                      # stop the stack",
    ]


def _dashboard_login(namespace: str) -> dict[str, str]:
    """How to look at the kept demo in the dashboard: the command and a one-time login URL (#19)."""
    from phoenix95.cli.dashboard import login_url

    env = f"P95_NAMESPACE={namespace} P95_POSTGRES__DB_SCHEMA={namespace} P95_REDIS__PREFIX={namespace}:s4:"
    return {"command": f"{env} p95 dashboard", "login_url": login_url("operator")}


def _signals(start: datetime, namespace: str) -> list[Signal]:
    prices = {"XRPUSDT": None, "BTCUSDT": Decimal("64000"), "ETHUSDT": Decimal("4600")}
    signals = []
    for index, spec in enumerate(VALID_SIGNALS):
        when = start + timedelta(hours=spec.hours)
        price = prices[spec.symbol] or Decimal("1.19")
        payload: dict[str, Any] = {
            "symbol": spec.symbol,
            "action": spec.action,
            "price": str(price),
            "confidence": spec.confidence,
            "strategy": spec.strategy,
            "timeframe": spec.timeframe,
            "source": "demo",
            "source_timestamp": when.isoformat(),
        }
        if spec.rsi:
            payload["rsi"] = spec.rsi
        if spec.macd:
            payload["macd"] = spec.macd
        signal_id = f"{namespace}-signal-{index:03d}"
        signals.append(build_signal(payload, producer="demo", signal_id=signal_id))
    return signals


def market_events(namespace: str) -> list[MarketPrice]:
    xrp = bundled_candle_events("XRPUSDT", "5m", namespace=namespace)
    start = xrp[0].ts_event - timedelta(minutes=5)
    btc = GbmFeed("BTCUSDT", Decimal("64000"), start, seed=95, tick_size=Decimal("0.1")).events(
        len(xrp), namespace=namespace
    )
    eth = GbmFeed("ETHUSDT", Decimal("4600"), start, seed=95, tick_size=Decimal("0.01")).events(
        len(xrp), namespace=namespace
    )
    return merge_by_time(xrp, btc, eth)


async def _publish(settings: Settings, say: Any) -> dict[str, int]:
    from phoenix95.streams.producer import EventProducer

    topics = Topics(settings.namespace)
    codec = Codec.for_settings(settings)
    producer = EventProducer(settings.kafka.bootstrap_servers, topics, codec)
    await producer.start()
    try:
        prices = market_events(settings.namespace)
        start = prices[0].ts_event
        # Signals are priced at the market: the close of the last candle of their symbol before them.
        signals = [_priced(signal, prices) for signal in _signals(start, settings.namespace)]
        timeline: list[tuple[datetime, int, Any]] = [(p.ts_event, 0, p) for p in prices] + [
            (s.ts_event, 1, s) for s in signals
        ]
        timeline.sort(key=lambda item: (item[0], item[1]))
        chunk: list[Any] = []
        for _, _, event in timeline:
            chunk.append(event)
            if len(chunk) >= 500:
                await producer.publish(chunk)
                chunk = []
        if chunk:
            await producer.publish(chunk)
        truncated = codec.encode(signals[0])[:20]
        malformed = [*(value for _, value in MALFORMED), truncated]
        await producer.publish_raw([(topics.signals, b"XRPUSDT", value, []) for value in malformed])
        return {"prices": len(prices), "signals": len(signals) + len(malformed), "malformed": len(malformed)}
    finally:
        await producer.stop()


def _priced(signal: Signal, prices: list[MarketPrice]) -> Signal:
    last = None
    for price in prices:
        if price.symbol == signal.symbol and price.ts_event <= signal.ts_event:
            last = price.price
        elif price.ts_event > signal.ts_event:
            break
    return signal.model_copy(update={"price": last}) if last is not None else signal


async def _wait_settled(settings: Settings, timeout: float, workers: Any) -> bool:
    from phoenix95.connectors.kafka_admin import committed_offsets, end_offsets, message_counts
    from phoenix95.storage.postgres import Database

    topics = Topics(settings.namespace)
    deadline = time.monotonic() + timeout
    async with Database(settings.postgres_url(), schema=settings.postgres.db_schema) as db:
        while time.monotonic() < deadline:
            workers.restart_dead()
            published = (await message_counts(settings.kafka.bootstrap_servers, [topics.signals]))[topics.signals]
            rows = await db.fetch(
                """SELECT (SELECT COUNT(*) FROM signals),
                          (SELECT COUNT(*) FROM dead_letters WHERE stage = 'analysis'),
                          (SELECT COUNT(*) FROM risk_verdicts),
                          (SELECT COUNT(*) FROM risk_verdicts WHERE decision = 'APPROVED'),
                          (SELECT COUNT(*) FROM orders),
                          (SELECT COUNT(*) FROM orders WHERE status = 'filled' AND intent = 'open'),
                          (SELECT COUNT(*) FROM positions)"""
            )
            analyzed, dead, verdicts, approved, orders, filled, positions = rows[0]
            signals_done = analyzed + dead >= published and verdicts >= analyzed
            orders_done = orders >= approved and positions >= filled
            if signals_done and orders_done:
                lagging = await _lag(settings, topics, committed_offsets, end_offsets)
                if lagging == 0:
                    return True
            await asyncio.sleep(0.5)
    return False


async def _lag(settings: Settings, topics: Topics, committed_offsets: Any, end_offsets: Any) -> int:
    bootstrap = settings.kafka.bootstrap_servers
    total = 0
    for stage, inputs in (("positions", [topics.orders, topics.market_prices]), ("execution", [topics.risk_verdicts])):
        ends = await end_offsets(bootstrap, inputs)
        committed = await committed_offsets(bootstrap, topics.group(stage), inputs)
        total += sum(max(0, end - committed.get(tp, 0)) for tp, end in ends.items())
    return total


async def _summary(settings: Settings) -> dict[str, Any]:
    from phoenix95.connectors.kafka_admin import message_counts
    from phoenix95.storage.postgres import Database
    from phoenix95.storage.redis_state import RedisState

    topics = Topics(settings.namespace)
    counts = await message_counts(
        settings.kafka.bootstrap_servers, [topics.signals, topics.position_ticks, topics.dlq, topics.orders]
    )
    async with Database(settings.postgres_url(), schema=settings.postgres.db_schema) as db:
        rows = await db.fetch(
            """SELECT (SELECT COUNT(*) FROM signals),
                      (SELECT COUNT(*) FROM dead_letters WHERE stage = 'analysis'),
                      (SELECT COUNT(*) FROM risk_verdicts WHERE decision = 'APPROVED'),
                      (SELECT COUNT(*) FROM risk_verdicts WHERE decision = 'REJECTED'),
                      (SELECT COUNT(*) FROM orders),
                      (SELECT COUNT(*) FROM positions),
                      (SELECT COUNT(*) FROM trades),
                      (SELECT COUNT(*) FROM positions WHERE status <> 'open'),
                      (SELECT COALESCE(SUM(realized_pnl), 0) FROM positions WHERE status <> 'open'),
                      (SELECT COUNT(*) FROM dead_letters)"""
        )
        reasons = await db.fetch(
            "SELECT reason, COUNT(*) FROM (SELECT unnest(reasons) AS reason FROM risk_verdicts) r GROUP BY reason ORDER BY 2 DESC"
        )
        closes = await db.fetch(
            "SELECT COALESCE(close_reason, status), COUNT(*) FROM positions WHERE status <> 'open' GROUP BY 1"
        )
        traced = await db.fetch(  # a signal that went all the way: opened, ticked, closed
            "SELECT signal_id FROM positions WHERE status <> 'open' ORDER BY signal_id LIMIT 1"
        )
        dlq_reasons = await db.fetch("SELECT reason, COUNT(*) FROM dead_letters GROUP BY reason ORDER BY reason")
    (analyzed, dead_signals, approved, rejected, orders, positions, trades, closed, realized, dead_rows) = rows[0]
    redis = RedisState.from_url(settings.redis_url(), prefix=settings.redis.prefix)
    try:
        redis_keys = await redis.count_keys()
    finally:
        await redis.close()
    return {
        "signals_published": counts[topics.signals],
        "signals_processed": analyzed + dead_signals,
        "verdicts_approved": approved,
        "verdicts_rejected": rejected,
        "orders": orders,
        "positions_opened": positions,
        "positions_closed": closed,
        "position_ticks": counts[topics.position_ticks],
        "dlq": counts[topics.dlq],
        "dlq_rows": dead_rows,
        "dlq_reasons": {reason: count for reason, count in dlq_reasons},
        "postgres_rows": {"signals": analyzed, "trades": trades, "positions": positions},
        "redis_keys": redis_keys,
        "timeseries_points": _timeseries_points(settings),
        "rejection_reasons": {reason: count for reason, count in reasons},
        "close_reasons": {reason: count for reason, count in closes},
        "realized_pnl": str(realized),
        "trace_signal_id": traced[0][0] if traced else None,
    }


def _timeseries_points(settings: Settings) -> int:
    """Points of this namespace in VictoriaMetrics (counted from the store, after a flush)."""
    url = settings.influx.url
    if not url:
        return 0
    base = url.rstrip("/")
    try:
        urllib.request.urlopen(base + "/internal/force_flush", timeout=10).read()
    except Exception:
        pass
    query = urllib.parse.urlencode({"match[]": f'{{ns="{settings.namespace}"}}'})
    total = 0
    try:
        with urllib.request.urlopen(f"{base}/api/v1/export?{query}", timeout=30) as response:
            for line in response:
                if line.strip():
                    total += len(json.loads(line).get("values", []))
    except Exception:
        return 0
    return total


def _print_summary(console: Console, summary: dict[str, Any]) -> None:
    from rich.table import Table

    if summary.get("error"):
        console.print(f"[red]{summary['error']}[/red]")
    table = Table(title="Phoenix95 demo", show_header=False)
    for key in (
        "signals_published",
        "signals_processed",
        "verdicts_approved",
        "verdicts_rejected",
        "orders",
        "positions_opened",
        "positions_closed",
        "position_ticks",
        "dlq",
        "redis_keys",
        "timeseries_points",
        "realized_pnl",
        "elapsed_s",
    ):
        table.add_row(key, str(summary.get(key, "-")))
    table.add_row("postgres_rows", json.dumps(summary.get("postgres_rows", {})))
    table.add_row("rejection_reasons", json.dumps(summary.get("rejection_reasons", {})))
    table.add_row("close_reasons", json.dumps(summary.get("close_reasons", {})))
    table.add_row("dlq_reasons", json.dumps(summary.get("dlq_reasons", {})))
    if "notifications" in summary:
        table.add_row("notifications", json.dumps(summary["notifications"]))
    console.print(table)
