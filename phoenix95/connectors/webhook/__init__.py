"""The signal webhook (`p95 serve`): TradingView-compatible alerts in, confirmed signals out.

``POST /webhook/signal`` takes a JSON body or ``text/plain`` (JSON-looking text or ``key=value``
pairs; see `phoenix95.connectors.webhook.alerts.parse_alert`) and answers only after the broker confirmed
the write. TradingView signs nothing, so each request is checked, in this order:

====  ==========================================================================================
413   body larger than ``max_body_bytes``
403   client address outside ``allow_ips`` (when set; ``tradingview`` names TradingView's four
      addresses). ``X-Forwarded-For`` counts only when the peer is one of ``trusted_proxies``.
400   body unreadable (not UTF-8, not JSON, not ``key=value``)
401   no secret, or a wrong one: ``passphrase`` (or ``secret``/``token``/``key``) in the body, or
      the ``X-P95-Secret`` / ``Authorization: Bearer`` header; compared in constant time against
      every configured source's secret, and the match names the source
429   over ``rate_limit_per_minute`` for that source (Redis, fixed minute window), Retry-After set
422   a field is wrong (named in ``errors``), or the alert's own timestamp is older than
      ``max_alert_age_s`` (or that far in the future)
200   ``duplicate``: the same alert (same normalised content or same ``signal_id``) was accepted
      within ``replay_window_s``; nothing is published again
503   Redis or the broker unavailable, or no confirmation in ``publish_timeout_s``
200   ``published``, with the signal id, partition and offset
====  ==========================================================================================
"""

from phoenix95.connectors.webhook.access import (
    IP_PRESETS,
    SECRET_HEADER,
    TRADINGVIEW_IPS,
    Network,
    SecretBook,
    client_address,
    parse_networks,
    presented_secret,
    signal_source,
)
from phoenix95.connectors.webhook.app import SIGNAL_PATH, WebhookConfig, create_app
from phoenix95.connectors.webhook.guard import Admission, AlertGuard, age_problem, retry_after
from phoenix95.connectors.webhook.metrics import RequestOutcome, WebhookMetrics

__all__ = [
    "IP_PRESETS",
    "SECRET_HEADER",
    "SIGNAL_PATH",
    "TRADINGVIEW_IPS",
    "Admission",
    "AlertGuard",
    "Network",
    "RequestOutcome",
    "SecretBook",
    "WebhookConfig",
    "WebhookMetrics",
    "age_problem",
    "client_address",
    "create_app",
    "parse_networks",
    "presented_secret",
    "retry_after",
    "signal_source",
]
