"""Channels through Apprise's own plugins, with every HTTP request stubbed (no network): the
Telegram, Discord and Slack renderings, Telegram's 4,096-character split, 429 / Retry-After, routing,
flood limits, and refusing a bad URL or rule at start with one line naming it."""

from __future__ import annotations

import json

import pytest

from phoenix95.notify import events as ev
from phoenix95.notify import templates
from phoenix95.notify.channels import ConfigError, Router, TokenBucket, build_channels, load_channel, send_sync
from phoenix95.settings import NotifySettings, Settings
from tests import notify_samples as s
from tests.notify_samples import body_of, http_stub

TELEGRAM = "tgram://123456789:AABBCCDDEEFFaabbccddeeff_123456789/12345"
DISCORD = "discord://4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js"
SLACK = "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#general"


def _send(url: str, kind: str, payload: dict) -> tuple[list, object]:
    channel = load_channel(0, url)
    rendered = templates.render(kind, payload, markdown=channel.markdown)
    with http_stub() as sent:
        result = send_sync(
            channel.plugin(), rendered.title, rendered.body, markdown=True, severity="info", silent=False
        )
    return sent, result


def test_telegram_gets_markdown_with_the_position_in_a_code_span() -> None:
    sent, result = _send(TELEGRAM, ev.POSITION_OPENED, s.OPENED)
    assert result.ok  # type: ignore[attr-defined]
    (request,) = sent
    assert request.url.startswith("https://api.telegram.org/bot")
    body = body_of(request)
    assert body["parse_mode"].lower() == "markdown" and body["chat_id"] == 12345
    assert body["text"].startswith("*Opened LONG BTCUSDT @ 43000.5*")
    assert f"`{s.OPENED['position_id']}`" in body["text"] and "*Position*" in body["text"]


def test_telegram_silent_types_go_without_a_sound() -> None:
    channel = load_channel(0, TELEGRAM)
    with http_stub() as sent:
        send_sync(channel.plugin(), "t", "b", markdown=True, severity="info", silent=True)
    assert body_of(sent[0])["disable_notification"] is True


def test_a_telegram_digest_over_4096_characters_goes_out_in_parts_each_accepted() -> None:
    channel = load_channel(0, TELEGRAM)
    assert channel.body_maxlen == 4096 and channel.title_in_body
    payloads = [{**s.CLOSED, "position_id": f"position-{i:03d}"} for i in range(120)]
    lines = [templates.digest_line(ev.POSITION_CLOSED, p, markdown=True) for p in payloads]
    digest = templates.digest(lines, [ev.POSITION_CLOSED] * 120, markdown=True, window_s=60)
    parts = templates.split(digest, channel.body_maxlen, title_in_body=True)
    plugin = channel.plugin()
    with http_stub() as sent:
        for part in parts:
            assert send_sync(plugin, part.title, part.body, markdown=True, severity="info", silent=False).ok
    texts = [body_of(r)["text"] for r in sent]
    assert len(texts) == len(parts) > 1
    assert all(len(text) <= 4096 for text in texts)
    joined = "\n".join(texts)
    for i in range(120):
        assert joined.count(f"position-{i:03d}") == 1


def test_discord_gets_markdown_content() -> None:
    sent, result = _send(DISCORD, ev.POSITION_CLOSED, s.CLOSED)
    assert result.ok  # type: ignore[attr-defined]
    content = body_of(sent[0])["content"]
    assert content.startswith("Closed LONG BTCUSDT (stop-loss): PnL -12.90 USDT")
    assert "**Reason** " not in content and "Reason **stop-loss**" in content
    assert f"`{s.CLOSED['position_id']}`" in content and len(content) <= 2000


def test_slack_gets_mrkdwn_bold_and_the_title_as_attachment_title() -> None:
    sent, result = _send(SLACK, ev.RISK_ESCALATION, s.RISK)
    assert result.ok  # type: ignore[attr-defined]
    attachment = body_of(sent[0])["attachments"][0]
    assert attachment["title"].startswith("Risk CRITICAL: LONG BTCUSDT")
    assert "*Position*" in attachment["text"] and "**" not in attachment["text"]


def test_a_429_reports_its_retry_after() -> None:
    channel = load_channel(0, "json://127.0.0.1:9/hook")
    with http_stub(lambda request: (429, {"Retry-After": "7"}, b"slow down")):
        result = send_sync(channel.plugin(), "t", "b", markdown=False, severity="info", silent=False)
    assert not result.ok and result.retry_after == 7.0 and result.status == 429
    with http_stub(lambda request: (500, {}, b"boom")):
        result = send_sync(channel.plugin(), "t", "b", markdown=False, severity="info", silent=False)
    assert not result.ok and result.retry_after is None and result.status == 500


def test_a_json_webhook_gets_plain_text() -> None:
    channel = load_channel(0, "json://127.0.0.1:9/hook")
    assert not channel.markdown
    rendered = templates.render(ev.POSITION_OPENED, s.OPENED, markdown=channel.markdown)
    with http_stub() as sent:
        send_sync(channel.plugin(), rendered.title, rendered.body, markdown=False, severity="info", silent=False)
    body = body_of(sent[0])
    assert body["title"] == "Opened LONG BTCUSDT @ 43000.5" and "`" not in body["message"]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"urls": ["json://127.0.0.1/a", "nonsense"]}, "notify URL #2 (****): not a URL"),
        ({"urls": ["tgram://secret-token-without-chat"]}, "notify URL #1 (tgram://****): Apprise cannot load it"),
        (
            {"urls": ["json://127.0.0.1/a"], "rules": [{"types": ["position_opend"], "tags": ["x"]}]},
            "notify rule #1: unknown event type 'position_opend'",
        ),
        (
            {"urls": ["json://127.0.0.1/a"], "rules": [{"types": ["*"], "tags": ["ops"]}]},
            "notify rule #1: tag 'ops' is on no notify URL",
        ),
        ({"urls": [], "types": {"fills": "on"}}, "notify types: unknown event type 'fills'"),
    ],
)
def test_a_bad_url_or_rule_is_refused_in_one_line_naming_it(config: dict, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        build_channels(NotifySettings.model_validate(config))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
    assert "secret-token" not in str(error.value)


def test_routing_by_type_severity_and_tags_and_default_modes() -> None:
    settings = NotifySettings.model_validate(
        {
            "urls": [
                {"url": "json://127.0.0.1/all"},
                {"url": "json://127.0.0.1/ops", "tags": ["ops"], "name": "ops"},
                {"url": "json://127.0.0.1/trades", "tags": ["trades"], "name": "trades"},
            ],
            "rules": [
                {"types": ["position_opened", "position_closed"], "tags": ["trades"]},
                {"types": ["*"], "min_severity": "critical", "tags": ["ops"]},
            ],
            "types": {"verdict_rejected": "on"},
        }
    )
    channels = build_channels(settings)
    router = Router(settings, channels)
    names = lambda kind, severity: sorted(c.name for c in router.route(kind, severity))  # noqa: E731
    untagged = channels[0].name
    assert names(ev.POSITION_OPENED, "info") == sorted([untagged, "trades"])
    assert names(ev.POSITION_CLOSED, "critical") == sorted([untagged, "ops", "trades"])
    assert names(ev.HEALTH, "warning") == [untagged]
    assert router.mode(ev.VERDICT_APPROVED) == "silent" and router.mode(ev.ORDER_REJECTED) == "off"
    assert names(ev.VERDICT_REJECTED, "info") == [untagged]  # switched on
    assert names(ev.ORDER_REJECTED, "critical") == []


def test_the_token_bucket_enforces_per_second_and_per_minute() -> None:
    now = [0.0]
    bucket = TokenBucket(1, 20, clock=lambda: now[0])
    sent = 0
    while now[0] < 120:
        if bucket.wait_time() <= 0:
            bucket.take()
            sent += 1
        now[0] += 0.05
    # 20 in the first burst, then one every 3 s: never more than 1/s nor 20 in any minute
    assert 55 <= sent <= 61
    bucket.block(30)
    assert bucket.available() == 0 and bucket.wait_time() >= 29.9


def test_config_show_masks_the_secrets_inside_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "P95_NOTIFY__URLS", json.dumps([TELEGRAM, {"url": "json://user:hunter2@127.0.0.1:8000/hook", "tags": ["ops"]}])
    )
    shown = json.dumps(Settings().masked())
    assert "AABBCCDDEEFF" not in shown and "hunter2" not in shown
    assert "tgram://" in shown and "json://user:****@127.0.0.1:8000/hook" in shown
    assert Settings().notify.urls[1].tags == ["ops"]
