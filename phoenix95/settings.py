"""One settings model for all of Phoenix95 (env prefix ``P95_``, nested with ``__``).

Resolution order: explicit values > environment (``P95_KAFKA__BOOTSTRAP_SERVERS=...``) > the
endpoints file written by ``p95 up`` (``$P95_HOME/endpoints.json``) > defaults. Secrets are
``SecretStr`` and printed masked. Defaults are for local development only; ``check_production()``
refuses them elsewhere.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_serializer, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from phoenix95.domain.config import DEFAULT_SYMBOLS, TradingConfig

ENDPOINTS_FILE = "endpoints.json"

#: The seed's service map: the default port of each long-running component, which serves /health
#: and /metrics there. Set one with P95_PORTS__<NAME> (the webhook: P95_WEBHOOK__PORT).
DEFAULT_PORTS: dict[str, int] = {
    "api": 8100,
    "webhook": 8101,
    "feed": 8102,
    "analysis": 8103,
    "risk": 8104,
    "execution": 8106,
    "positions": 8107,
    "compliance": 8108,
    "notifications": 8109,
    "dashboard": 8110,
}


class ServiceNotConfigured(RuntimeError):
    """A command needs a store no setting points to (the stack is not running): says `p95 up`."""


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    partitions: int = Field(4, ge=1)
    replication_factor: int = Field(1, ge=1)
    #: How long a fetch waits for data on the broker. Faust hard-codes 1500 ms; we patch it (see
    #: streams/transport.py) because on Tansu each hop would otherwise take hundreds of ms.
    fetch_max_wait_ms: int = Field(10, ge=0)
    #: Tansu holds the first JoinGroup of a new group for half the session timeout: Faust's default
    #: 60 s made every worker wait 30 s to join. 6 s joins in 3 s and still tolerates GC pauses.
    session_timeout_s: float = Field(6.0, gt=0)
    heartbeat_interval_s: float = Field(1.0, gt=0)
    rebalance_timeout_s: float = Field(20.0, gt=0)
    request_timeout_s: float = Field(30.0, gt=0)
    #: How often Faust commits acknowledged offsets (the re-delivery window after a crash).
    commit_interval_s: float = Field(0.5, gt=0)
    #: Stage batches: up to this many records, or whatever arrived within `batch_within_s`. Only a
    #: backlog fills a batch (at live rates it is whatever arrived in 5 ms); then each batch pays a
    #: fixed cost per write (transaction, COPY set-up, the rows PostgreSQL's COPY buffers until its
    #: end, the commit's fsync) that 2,000 rows amortize: the PostgreSQL sink writes 1.3-1.6x the
    #: rows/s of batches of 500 (`p95 bench --only sink_postgres`), and the pipeline ~1.1x.
    batch_max_records: int = Field(2000, ge=1)
    batch_within_s: float = Field(0.005, gt=0)
    linger_ms: int = Field(1, ge=0)
    #: The stages' producers always wait for every in-sync replica (acks=all). Idempotence (no
    #: duplicate or reordered batch on a producer retry) needs a broker that answers InitProducerId:
    #: Apache Kafka does (the cluster compose file turns it on), Tansu does not (keep it off there).
    idempotent_producer: bool = False
    #: What runs a stage worker's consume loop: `direct`, aiokafka's consumer under our own loop
    #: (`streams/direct.py`: a fraction of Faust's per-message CPU, the same guarantees), or `faust`,
    #: a Faust worker and its stream (`streams/app.py`).
    consumer_loop: Literal["direct", "faust"] = "direct"
    schema_registry_url: str | None = None


class PostgresSettings(BaseModel):
    url: SecretStr | None = None
    #: The schema the tables live in (tests and replays use their own).
    db_schema: str = Field("public", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    pool_min_size: int = 1
    pool_max_size: int = 8
    connect_timeout_s: float = 5.0
    #: A stage's write running longer is cancelled and retried (logged, `p95_stage_sink_retries_total`)
    #: instead of hanging unseen behind a lock; 0 = no limit. Migrations are not limited.
    statement_timeout_s: float = Field(30.0, ge=0)


class RedisSettings(BaseModel):
    url: SecretStr | None = None
    prefix: str = "s4:"
    price_ttl_s: int = 60
    analysis_ttl_s: int = 180
    metrics_ttl_s: int = 15


class InfluxSettings(BaseModel):
    url: str | None = None
    token: SecretStr = SecretStr("phoenix95-local-dev-token")
    org: str = "phoenix95"
    #: The default bucket (measurements not routed below go here).
    bucket: str = "s4_trading_data"
    #: The seed's buckets: measurement -> bucket (`p95 influx setup` creates them with their retention).
    buckets: dict[str, str] = Field(
        default_factory=lambda: {
            "s4_price_data": "s4_market_data",
            "s4_trade_metrics": "s4_trading_data",
            "s4_system_metrics": "s4_system_metrics",
            "s4_risk_metrics": "s4_risk_metrics",
        }
    )
    enabled: bool = True
    timeout_s: float = 10.0
    #: How long the embedded VictoriaMetrics (`p95 up`) keeps points, one retention for every
    #: measurement (on InfluxDB 2 each bucket keeps the seed's own). None keeps everything: replays
    #: and the demo write points at their historical event times, which a retention would drop. For a
    #: live-only stack, e.g. 90 bounds the store (docs/long-runs.md gives its growth per day).
    retention_days: int | None = Field(default=None, ge=1)


class RiskSettings(BaseModel):
    """Trading parameters (the seed's defaults). `overrides` sets any of them per symbol, e.g.
    ``P95_RISK__OVERRIDES='{"BTCUSDT": {"leverage": 10}}'``."""

    allowed_symbols: list[str] = Field(default_factory=lambda: list(DEFAULT_SYMBOLS))
    extra_symbols: list[str] = Field(default_factory=list)
    min_confidence: Decimal = Decimal("0.25")
    phoenix95_threshold: Decimal = Decimal("0.45")
    max_position_fraction: Decimal = Decimal("0.15")
    kelly_fraction: Decimal = Decimal("0.20")
    leverage: int = 20
    margin_mode: Literal["ISOLATED", "CROSSED"] = "ISOLATED"
    stop_loss_pct: Decimal = Decimal("0.02")
    take_profit_pct: Decimal = Decimal("0.02")
    liquidation_buffer: Decimal = Decimal("0.10")
    taker_fee_rate: Decimal = Decimal("0.0004")
    default_funding_rate: Decimal = Decimal("0.0001")
    funding_interval_s: int = 8 * 3600
    slippage_tolerance: Decimal = Decimal("0.001")
    base_slippage_rate: Decimal = Decimal("0.0002")
    max_open_positions: int = 10
    max_notional_per_order: Decimal = Decimal("250000")
    max_exposure_per_symbol: Decimal = Decimal("500000")
    max_orders_per_minute: int = 60
    signal_max_age_s: float = 300.0
    duplicate_window_s: float = 60.0
    monitoring_interval_s: float = 5.0
    #: A position's mark-to-market tick is published (topic, time series) at most this often, in
    #: event time; it is still evaluated on every price, and opens, closes, liquidations and funding
    #: are always published. PostgreSQL and Redis keep its latest state either way.
    mark_interval_s: float = Field(1.0, ge=0)
    max_hold_hours: float = 48.0
    starting_equity: Decimal = Decimal("10000")
    #: Reject new signals with SIGNAL_STALE while the analysis or risk stage lags more than this.
    max_pipeline_lag_s: float = 30.0
    #: Wall clock: reject with SIGNAL_STALE when the symbol's latest market price is older than this
    #: (a stale live feed). 0 = off; with a live exchange (P95_EXCHANGE__KIND) it defaults to 15 s.
    max_market_data_age_s: float = Field(0.0, ge=0)
    #: wall: staleness and monitoring use the wall clock (live trading); event: the latest market
    #: event time (replays and the demo, which replays recorded candles).
    clock: Literal["wall", "event"] = "wall"
    brackets_file: Path | None = None
    overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)

    def trading_config(self) -> TradingConfig:
        return TradingConfig(
            allowed_symbols=frozenset(s.upper() for s in [*self.allowed_symbols, *self.extra_symbols]),
            min_confidence=self.min_confidence,
            phoenix95_threshold=self.phoenix95_threshold,
            max_position_fraction=self.max_position_fraction,
            kelly_fraction=self.kelly_fraction,
            leverage=self.leverage,
            margin_mode=self.margin_mode,
            stop_loss_pct=self.stop_loss_pct,
            take_profit_pct=self.take_profit_pct,
            liquidation_buffer=self.liquidation_buffer,
            taker_fee_rate=self.taker_fee_rate,
            default_funding_rate=self.default_funding_rate,
            funding_interval=timedelta(seconds=self.funding_interval_s),
            slippage_tolerance=self.slippage_tolerance,
            base_slippage_rate=self.base_slippage_rate,
            max_open_positions=self.max_open_positions,
            max_notional_per_order=self.max_notional_per_order,
            max_exposure_per_symbol=self.max_exposure_per_symbol,
            max_orders_per_minute=self.max_orders_per_minute,
            signal_max_age=timedelta(seconds=self.signal_max_age_s),
            duplicate_window=timedelta(seconds=self.duplicate_window_s),
            monitoring_interval=timedelta(seconds=self.monitoring_interval_s),
            max_hold=timedelta(hours=self.max_hold_hours),
            starting_equity=self.starting_equity,
            overrides={symbol.upper(): values for symbol, values in self.overrides.items()},
        )


class ExecutionSettings(BaseModel):
    exchange: Literal["paper"] = "paper"
    #: Fill at the last price when no newer market price arrived within this time (wall clock).
    quiet_feed_fill_after_s: float = 2.0
    #: Price events kept per symbol to find "the next price after the decision".
    price_history: int = 5000


class ExchangeSettings(BaseModel):
    """The exchange connector (``P95_EXCHANGE__*``). ``paper`` (the default) fills on the paper model;
    ``binance-demo`` trades on Binance's USDⓈ-M demo environment; ``binance`` trades real money and also
    needs ``P95_EXCHANGE__LIVE_CONFIRM=yes``."""

    kind: Literal["paper", "binance-demo", "binance"] = "paper"
    api_key: SecretStr = SecretStr("")
    api_secret: SecretStr = SecretStr("")
    live_confirm: str = ""
    #: REST base URL override (a local simulator in the tests), e.g. http://127.0.0.1:9999.
    base_url: str | None = None
    #: Websocket base URL override (default: derived from base_url, else Binance's).
    ws_url: str | None = None
    recv_window_ms: int = Field(5000, ge=1, le=60000)
    request_timeout_s: float = Field(10.0, gt=0)
    #: An order whose answer was lost or ambiguous (-1006/-1007, 5xx, timeout) is asked for by its client
    #: order id this many times, this far apart, before it is left UNKNOWN for reconciliation.
    resolve_attempts: int = Field(6, ge=1)
    resolve_interval_s: float = Field(0.5, ge=0)
    #: An UNKNOWN order the exchange still does not know this long after recvWindow was never placed
    #: (Binance refuses a request older than its recvWindow): it is settled NOT_PLACED, never re-sent.
    not_placed_after_s: float = Field(5.0, ge=0)
    #: Reconcile with the exchange this often while running (0 = only at start).
    reconcile_interval_s: float = Field(60.0, ge=0)
    #: Poll fills/positions by REST this often when the user-data stream is down.
    poll_interval_s: float = Field(5.0, gt=0)
    #: Alarm (p95_exchange_clock_drift_seconds) when the local clock is off by more than this.
    max_clock_drift_s: float = Field(1.0, gt=0)
    #: Stop sending when the used request weight reaches this fraction of the limit (1-minute window).
    weight_headroom: float = Field(0.9, gt=0, le=1)
    #: Place reduce-only stop-loss and take-profit orders at the exchange after an entry fills.
    protection: bool = True
    #: Symbols of `p95 worker --stage feed` (default: the allowed symbols).
    feed_symbols: list[str] = Field(default_factory=list)

    def live(self) -> bool:
        return self.kind != "paper"

    #: The stale-feed limit risk applies with a live exchange unless P95_RISK__MAX_MARKET_DATA_AGE_S is set.
    default_market_data_age_s: float = Field(15.0, gt=0)

    def problems(self) -> list[str]:
        """Why this configuration cannot trade (empty when it can)."""
        if not self.live():
            return []
        problems = []
        if not self.api_key.get_secret_value() or not self.api_secret.get_secret_value():
            problems.append("P95_EXCHANGE__API_KEY and P95_EXCHANGE__API_SECRET are required for " + self.kind)
        if self.kind == "binance" and self.live_confirm != "yes":
            problems.append("P95_EXCHANGE__KIND=binance trades real money: also set P95_EXCHANGE__LIVE_CONFIRM=yes")
        return problems


class PortSettings(BaseModel):
    """Default ports of the components (see DEFAULT_PORTS); the webhook's is `webhook.port`."""

    api: int = Field(DEFAULT_PORTS["api"], ge=0, le=65535)
    feed: int = Field(DEFAULT_PORTS["feed"], ge=0, le=65535)
    analysis: int = Field(DEFAULT_PORTS["analysis"], ge=0, le=65535)
    risk: int = Field(DEFAULT_PORTS["risk"], ge=0, le=65535)
    execution: int = Field(DEFAULT_PORTS["execution"], ge=0, le=65535)
    positions: int = Field(DEFAULT_PORTS["positions"], ge=0, le=65535)
    compliance: int = Field(DEFAULT_PORTS["compliance"], ge=0, le=65535)
    notifications: int = Field(DEFAULT_PORTS["notifications"], ge=0, le=65535)
    dashboard: int = Field(DEFAULT_PORTS["dashboard"], ge=0, le=65535)


class WebhookSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_PORTS["webhook"], ge=0, le=65535)
    #: source name -> secret. A request must carry one of them (body "passphrase" or header).
    secrets: dict[str, SecretStr] = Field(default_factory=dict)
    allow_ips: list[str] = Field(default_factory=list)
    trusted_proxies: list[str] = Field(default_factory=list)
    rate_limit_per_minute: int = 200
    max_body_bytes: int = 16384
    replay_window_s: int = 300
    max_alert_age_s: float = 300.0
    publish_timeout_s: float = 2.5


class MetricsSettings(BaseModel):
    enabled: bool = True
    host: str = "127.0.0.1"
    #: Worker web/metrics ports: base + stage index (0 picks free ports).
    base_port: int = 0
    #: Every worker reports its system metrics (Redis s4:metrics:{stage}, expiring after
    #: redis.metrics_ttl_s, and s4_system_metrics points) this often.
    system_interval_s: float = Field(5.0, gt=0)


class ComplianceSettings(BaseModel):
    """The audit chain and the compliance monitor's protections (issue #18; docs/compliance.md)."""

    #: Write the audit entries of verdicts, orders, fills and closes in each stage's batch. Off only
    #: to measure what the chain costs (`p95 bench`); the trail is incomplete without it.
    audit_enabled: bool = True
    #: Protections (0 turns one off). Live, the compliance monitor stage applies them; on the event
    #: clock (replays, the demo) the risk stage does, in event time (docs/compliance.md).
    daily_loss_limit_pct: Decimal = Decimal("10")
    max_drawdown_pct: Decimal = Decimal("25")
    stoploss_guard_count: int = 5
    stoploss_guard_window_min: float = 60.0
    stoploss_guard_lock_min: float = 60.0
    stoploss_guard_scope: Literal["symbol", "all"] = "symbol"
    cooldown_min: float = 0.0
    #: The trading day of DAILY_LOSS_LIMIT and `p95 compliance report --day`: an IANA time zone.
    day_timezone: str = "UTC"
    #: PRICE_COLLAR in the risk stage (basis points from the last market price); None: off.
    price_collar_bps: Decimal | None = None

    def protection_config(self) -> Any:
        """The pure protections' config (`domain.protections.ProtectionConfig`)."""
        from phoenix95.domain.protections import ProtectionConfig

        return ProtectionConfig(
            daily_loss_limit_pct=self.daily_loss_limit_pct,
            max_drawdown_pct=self.max_drawdown_pct,
            stoploss_guard_count=self.stoploss_guard_count,
            stoploss_guard_window=timedelta(minutes=self.stoploss_guard_window_min),
            stoploss_guard_lock=timedelta(minutes=self.stoploss_guard_lock_min),
            stoploss_guard_scope=self.stoploss_guard_scope,
            cooldown=timedelta(minutes=self.cooldown_min),
            day_timezone=self.day_timezone,
        )

    def problems(self) -> list[str]:
        """Invalid protection settings, one line each naming the setting (refused at worker start)."""
        found: list[str] = self.protection_config().problems()
        if self.price_collar_bps is not None and self.price_collar_bps <= 0:
            found.append(f"compliance.price_collar_bps must be > 0 (or unset), not {self.price_collar_bps}")
        return found


class FeedSettings(BaseModel):
    """`p95 feed simulate` / `p95 worker --stage feed`: simulated live prices (GBM on the wall clock)."""

    #: What `p95 worker --stage feed` runs: `simulated` prices, `binance` (the mark-price and kline
    #: streams of `p95 feed binance`), or `auto`: binance with a live exchange, else simulated.
    source: Literal["auto", "simulated", "binance"] = "auto"
    symbols: list[str] = Field(default_factory=lambda: ["XRPUSDT", "BTCUSDT", "ETHUSDT"])
    interval_s: float = Field(1.0, gt=0)
    #: Annualized volatility of the simulated prices (0.8 = 80 %/year).
    volatility: float = Field(0.8, ge=0)
    seed: int | None = None


class ApiSettings(BaseModel):
    """`p95 api`: the REST API for programs (issue #19)."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORTS["api"]
    #: Requests per API key per minute (Redis counter s4:rate_limit:{key id}:{minute}); 429 past it.
    rate_limit_per_minute: int = Field(300, ge=1)
    #: The largest page a list endpoint serves (`limit` above it is a 422 naming `limit`).
    max_page_size: int = Field(500, ge=1)


class DashboardSettings(BaseModel):
    """`p95 dashboard`: the server-rendered web page (issue #19)."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORTS["dashboard"]
    session_ttl_s: int = Field(8 * 3600, ge=60)
    #: Failed and successful login attempts per client address per minute.
    login_attempts_per_minute: int = Field(10, ge=1)
    #: Entries kept in the live-update stream (XADD MAXLEN ~): how far back a reconnect can resume.
    stream_max_len: int = Field(5000, ge=10)
    #: How often the live feed reads the position state in Redis.
    poll_interval_s: float = Field(0.25, gt=0)
    heartbeat_s: float = Field(15.0, gt=0)
    #: Mark the session cookie Secure even behind a proxy that terminates TLS (the cookie is
    #: always Secure when the request itself is HTTPS).
    secure_cookies: bool = False


class NotifyUrl(BaseModel):
    """One notification channel: an Apprise URL (a secret: it holds tokens and passwords), optional
    tags for routing, an optional name (the channel's key in the outbox and in metrics; default: the
    URL's scheme and a hash of it) and optional limits (default: by channel kind, see notify/channels.py)."""

    url: SecretStr
    tags: list[str] = Field(default_factory=list)
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.:-]{1,40}$")
    per_second: float | None = Field(None, gt=0)
    per_minute: float | None = Field(None, gt=0)

    @field_serializer("url", when_used="json")
    def _masked_url(self, value: SecretStr) -> str:
        from phoenix95.notify.masking import mask_url

        return mask_url(value.get_secret_value())


class NotifyRule(BaseModel):
    """Routing: events of these types (or "*") at or above this severity go to the URLs with these tags."""

    types: list[str] = Field(default_factory=lambda: ["*"])
    min_severity: Literal["info", "warning", "critical"] = "info"
    tags: list[str]


class NotifySettings(BaseModel):
    """The notification hub (`p95 worker --stage notifications`). ``P95_NOTIFY__URLS`` is a JSON list
    of Apprise URLs, each a string or ``{"url": ..., "tags": [...], "per_minute": 20}``."""

    urls: list[NotifyUrl] = Field(default_factory=list)
    rules: list[NotifyRule] = Field(default_factory=list)
    #: Event type -> on | silent | off (merged over the defaults in notify/events.py).
    types: dict[str, Literal["on", "silent", "off"]] = Field(default_factory=dict)
    #: A row is marked failed after this many attempts (`p95 notify retry` sends it again).
    max_attempts: int = Field(8, ge=1)
    backoff_base_s: float = Field(1.0, gt=0)
    backoff_max_s: float = Field(60.0, gt=0)
    #: A sender holds rows it is sending for this long; a killed sender's rows are taken over after it.
    lease_s: float = Field(15.0, gt=0)
    #: How often the sender looks for pending rows (it is also woken by each write).
    poll_s: float = Field(0.25, gt=0)
    #: While a channel's rows come faster than its rate limit (they go out as digests), its digests are
    #: at least this far apart: one digest takes what came in meanwhile, instead of one per token.
    digest_interval_s: float = Field(0.25, ge=0)
    #: Dead letters are summarised per stage and reason over this window.
    dlq_window_s: float = Field(30.0, gt=0)
    #: Pipeline health (lag status, worker heartbeats) is checked this often.
    health_interval_s: float = Field(5.0, gt=0)
    #: HTTP connect / read timeouts handed to Apprise (seconds).
    timeout_s: float = Field(4.0, gt=0)
    #: The stage's consumer: how long a fetch waits on the broker and a batch collects records. Longer
    #: than the trading stages' (10 ms / 5 ms): a notification may take a tenth of a second more, and
    #: the idle worker fetches ten times less often and a busy one writes fewer, larger batches (its
    #: CPU is the trading stages' too: an idle hub polling every 10 ms cost 8 % of a core).
    fetch_max_wait_ms: int = Field(100, ge=0)
    batch_within_s: float = Field(0.05, gt=0)
    #: Sent rows are deleted from the outbox after this many days (by the stage, every
    #: `retention_interval_s`); failed rows stay until `p95 notify retry` sends them. Keep it longer
    #: than the topics' retention: a row deleted while its event can still be re-delivered would be
    #: sent again.
    retention_days: float = Field(30.0, gt=0)
    retention_interval_s: float = Field(3600.0, gt=0)

    @field_validator("urls", mode="before")
    @classmethod
    def _url_strings(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"url": item} if isinstance(item, str) else item for item in value]
        return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="P95_",
        env_nested_delimiter="__",
        extra="ignore",
        validate_default=True,
    )

    home: Path = Path(".p95")
    #: Prefix of every topic, consumer group, Redis key and time-series tag; empty in production.
    namespace: str = Field("", pattern=r"^[a-z0-9_.-]{0,40}$")
    environment: Literal["development", "production"] = "development"
    log_level: str = "INFO"
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    influx: InfluxSettings = Field(default_factory=InfluxSettings)
    risk: RiskSettings = Field(default_factory=RiskSettings)
    execution: ExecutionSettings = Field(default_factory=ExecutionSettings)
    exchange: ExchangeSettings = Field(default_factory=ExchangeSettings)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    compliance: ComplianceSettings = Field(default_factory=ComplianceSettings)
    ports: PortSettings = Field(default_factory=PortSettings)
    feed: FeedSettings = Field(default_factory=FeedSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, EndpointsFileSource(settings_cls), file_secret_settings)

    # -- helpers ---------------------------------------------------------------------------------

    def port_of(self, component: str) -> int:
        """The configured port of a component (DEFAULT_PORTS names)."""
        if component == "webhook":
            return self.webhook.port
        return int(getattr(self.ports, component))

    def endpoints_path(self) -> Path:
        return self.home / ENDPOINTS_FILE

    def postgres_url(self) -> str:
        if self.postgres.url is None:
            raise ServiceNotConfigured(
                "no PostgreSQL configured: the stack is not running; start it with `p95 up` (or set P95_POSTGRES__URL)"
            )
        return self.postgres.url.get_secret_value()

    def redis_url(self) -> str:
        if self.redis.url is None:
            raise ServiceNotConfigured(
                "no Redis configured: the stack is not running; start it with `p95 up` (or set P95_REDIS__URL)"
            )
        return self.redis.url.get_secret_value()

    def feed_source(self) -> Literal["simulated", "binance"]:
        """The market-data feed `p95 worker --stage feed` runs (P95_FEED__SOURCE)."""
        if self.feed.source != "auto":
            return self.feed.source
        return "binance" if self.exchange.live() else "simulated"

    def market_data_age_limit(self) -> float | None:
        """Seconds after which risk calls a symbol's market data stale (None: not checked)."""
        if self.risk.max_market_data_age_s > 0:
            return self.risk.max_market_data_age_s
        return self.exchange.default_market_data_age_s if self.exchange.live() else None

    def masked(self) -> dict[str, Any]:
        """Everything, with secrets masked (for `p95 config show`)."""
        data = self.model_dump(mode="json")
        return _mask(data, self)

    def check_production(self) -> None:
        """Refuse local-development defaults outside development."""
        if self.environment != "production":
            return
        problems = []
        if self.influx.token.get_secret_value() == "phoenix95-local-dev-token":
            problems.append("P95_INFLUX__TOKEN is the local development default")
        if not self.webhook.secrets:
            problems.append("no webhook secrets configured (P95_WEBHOOK__SECRETS)")
        if problems:
            raise RuntimeError("refusing to run in production: " + "; ".join(problems))


def _mask(data: Any, model: Any) -> Any:
    if isinstance(model, BaseModel):
        out = {}
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, SecretStr):
                out[name] = "**********" if value.get_secret_value() else ""
            else:
                out[name] = _mask(data.get(name), value) if isinstance(data, dict) else data
        return out
    if isinstance(model, dict):
        return {
            key: ("**********" if isinstance(value, SecretStr) else _mask(data.get(key), value))
            for key, value in model.items()
        }
    return data


class EndpointsFileSource(PydanticBaseSettingsSource):
    """Reads the endpoints `p95 up` wrote, so other commands find the embedded stack."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover - unused
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        home = Path(os.environ.get("P95_HOME", ".p95")).expanduser()
        path = home / ENDPOINTS_FILE
        if not path.is_file():
            return {}
        try:
            endpoints = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        values: dict[str, Any] = {}
        if endpoints.get("kafka", {}).get("url"):
            values["kafka"] = {"bootstrap_servers": endpoints["kafka"]["url"]}
        if endpoints.get("postgres", {}).get("url"):
            values["postgres"] = {"url": endpoints["postgres"]["url"]}
        if endpoints.get("redis", {}).get("url"):
            values["redis"] = {"url": endpoints["redis"]["url"]}
        if endpoints.get("timeseries", {}).get("url"):
            values["influx"] = {"url": endpoints["timeseries"]["url"]}
        return values


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests call `get_settings.cache_clear()` after env changes)."""
    return Settings()
