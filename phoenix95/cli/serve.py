"""`p95 serve`: the signal webhook (see phoenix95/connectors/webhook/)."""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any, NoReturn

import typer
from rich.console import Console

stderr = Console(stderr=True)
#: Shorter secrets are refused in production and warned about in development.
MIN_SECRET_LENGTH = 16


def register(app: typer.Typer) -> None:
    app.command()(serve)


def serve(
    host: str = typer.Option(None, "--host", help="Address to listen on. Default: P95_WEBHOOK__HOST (127.0.0.1)."),
    port: int = typer.Option(None, "--port", help="Port. Default: P95_WEBHOOK__PORT (8101)."),
    allow_ip: list[str] = typer.Option(
        None, "--allow-ip", help="Only accept these addresses/CIDRs (repeat); `tradingview` = TradingView's four."
    ),
    trusted_proxy: list[str] = typer.Option(
        None, "--trusted-proxy", help="Proxies whose X-Forwarded-For is believed (repeat)."
    ),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
) -> None:
    """Serve the TradingView-compatible webhook: POST /webhook/signal, GET /health, GET /metrics, /docs."""

    from phoenix95.connectors.webhook import create_app, parse_networks
    from phoenix95.settings import get_settings

    settings = get_settings()
    updates: dict[str, Any] = {}
    if host:
        updates["host"] = host
    if port:
        updates["port"] = port
    if allow_ip:
        updates["allow_ips"] = list(allow_ip)
    if trusted_proxy:
        updates["trusted_proxies"] = list(trusted_proxy)
    if updates:
        settings = settings.model_copy(update={"webhook": settings.webhook.model_copy(update=updates)})
    webhook = settings.webhook
    try:
        settings.check_production()
        parse_networks(webhook.allow_ips)
        parse_networks(webhook.trusted_proxies)
        _check_secrets(settings)
        redis_url = settings.redis_url()
    except (RuntimeError, ValueError) as error:
        _fail(str(error))
    from phoenix95.cli.ports import check_port_free

    try:
        check_port_free(webhook.host, webhook.port, what="the webhook", setting="P95_WEBHOOK__PORT or --port")
    except Exception as error:
        _fail(str(error))
    _check_services(settings, redis_url)

    app = create_app(settings, tune_gc=True)
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    sources = ", ".join(sorted(webhook.secrets))
    allowed = ", ".join(webhook.allow_ips) or "any address"
    stderr.print(
        f"webhook on http://{webhook.host}:{webhook.port}/webhook/signal  sources: {sources}  allowed: {allowed}  "
        f"topic: {settings.namespace + '.' if settings.namespace else ''}p95.signals  ({loop}, {http})"
    )
    from phoenix95.monitoring.health import registered

    with registered(settings.home, "webhook", port=webhook.port, host=webhook.host):
        _run_uvicorn(app, webhook, loop, http, log_level)


def _run_uvicorn(app: Any, webhook: Any, loop: str, http: str, log_level: str) -> None:
    import uvicorn

    uvicorn.run(
        app,
        host=webhook.host,
        port=webhook.port,
        loop=loop,
        http=http,
        proxy_headers=False,  # the app decides whom to believe (trusted_proxies)
        server_header=False,
        access_log=False,
        log_level=log_level.lower(),
        timeout_keep_alive=30,
    )


def _check_secrets(settings: Any) -> None:
    secrets = {name: value.get_secret_value() for name, value in settings.webhook.secrets.items()}
    if not any(secrets.values()):
        raise RuntimeError(
            'no webhook secrets configured: set P95_WEBHOOK__SECRETS=\'{"tradingview": "<a long random secret>"}\' '
            "(e.g. from `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    weak = sorted(name for name, value in secrets.items() if len(value) < MIN_SECRET_LENGTH or "change-me" in value)
    if weak and settings.environment == "production":
        raise RuntimeError(f"refusing to run in production: weak webhook secret(s) for {', '.join(weak)}")
    if weak:
        stderr.print(f"[yellow]warning:[/yellow] weak webhook secret(s) for {', '.join(weak)} (development only)")


def _check_services(settings: Any, redis_url: str) -> None:
    """Fail with a clear message, before uvicorn starts, when the broker or Redis is unreachable;
    create the signals topic with the configured partitions when it does not exist."""
    from phoenix95.connectors.publisher import BrokerUnavailable, SignalPublisher
    from phoenix95.stack.services import redis_healthy

    publisher = SignalPublisher.from_settings(settings, timeout=10.0)
    try:
        asyncio.run(
            publisher.ensure_topic(
                partitions=settings.kafka.partitions, replication_factor=settings.kafka.replication_factor
            )
        )
    except BrokerUnavailable as error:
        _fail(str(error))
    if not redis_healthy(redis_url):
        _fail("cannot reach Redis (P95_REDIS__URL); the webhook needs it for rate limits and replay protection")


def _fail(message: str) -> NoReturn:
    stderr.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)
