"""The stage registry: every pipeline stage's name, input topics and timer, stated once.

A leaf module (it imports only the topic names), so that anything may ask which stages exist and
what they read — `p95 worker`, the lag monitor, replays, the bench, the tests — without importing
the composition root (`streams/wiring.py`) or the stage code. Each stage class takes its `name`
and `inputs` from its entry here; the app factory (`streams/app.py`) subscribes a stage to its
`inputs` and runs its `on_clock` every `timer(settings)` seconds; one consumer group per stage.

To add a stage (say `notifications`):
1. here: `NOTIFICATIONS = StageSpec("notifications", (topics.CONTROL_EVENTS, ...), timer=...)`
   and append it to `SPECS` (the order is the order `p95 worker` and the demo start them in);
2. `agents/notifications.py`: a `Stage` subclass with `name = NOTIFICATIONS.name` and
   `inputs = NOTIFICATIONS.inputs` (its read ports in `agents/ports.py`, its message builders in
   `schemas/convert.py`; it imports no other stage module);
3. `streams/wiring.py`: a `_build_notifications(context)` function and its entry in `BUILDERS`.
`p95 worker --stage notifications` then runs it, and the lag monitor watches its group.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from phoenix95.schemas import topics

if TYPE_CHECKING:
    from phoenix95.settings import Settings


def no_timer(settings: Settings) -> float | None:
    return None


def pipeline_fetch_wait_ms(settings: Settings) -> int:
    return settings.kafka.fetch_max_wait_ms


def pipeline_batch_within_s(settings: Settings) -> float:
    return settings.kafka.batch_within_s


@dataclass(frozen=True)
class StageSpec:
    name: str
    #: Base topic names (without the namespace) the stage consumes.
    inputs: tuple[str, ...]
    #: Seconds between calls of the stage's `on_clock`, for these settings (None: no timer).
    timer: Callable[[Settings], float | None] = no_timer
    #: How long its consumer's fetch waits on the broker, and how long a batch collects records: the
    #: trading stages take them short (latency); a stage beside the path may trade a little latency
    #: for far fewer fetches and writes (an idle worker polling every 10 ms costs a few % of a core).
    fetch_wait_ms: Callable[[Settings], int] = pipeline_fetch_wait_ms
    batch_within_s: Callable[[Settings], float] = pipeline_batch_within_s


def _risk_timer(settings: Settings) -> float | None:
    # event clock: decide analyses held for missing prices once they waited long enough
    return 0.5 if settings.risk.clock == "event" else None


def _positions_timer(settings: Settings) -> float | None:
    # wall clock: mark open positions to market, expire and fund them between prices
    return settings.risk.monitoring_interval_s if settings.risk.clock == "wall" else None


ANALYSIS = StageSpec("analysis", (topics.SIGNALS,))
RISK = StageSpec("risk", (topics.ANALYSIS, topics.MARKET_PRICES), timer=_risk_timer)
# fill held verdicts at the last price once the feed has been quiet long enough
EXECUTION = StageSpec("execution", (topics.RISK_VERDICTS, topics.MARKET_PRICES), timer=lambda settings: 0.25)
POSITIONS = StageSpec("positions", (topics.ORDERS, topics.MARKET_PRICES), timer=_positions_timer)

# the notification hub: outbox rows for position, verdict, order, control and dead-letter events; its
# clock closes dead-letter summary windows and checks the pipeline's health (heartbeats, lag status).
# It reads the positions' lifecycle (opens, closes, risk-level changes), not every tick: off the
# per-tick path, so it does not compete with the trading stages for the CPU (streams/lifecycle.py)
NOTIFICATIONS = StageSpec(
    "notifications",
    (topics.POSITION_LIFECYCLE, topics.RISK_VERDICTS, topics.ORDERS, topics.CONTROL_EVENTS, topics.DLQ),
    timer=lambda settings: 1.0,
    fetch_wait_ms=lambda settings: settings.notify.fetch_max_wait_ms,
    batch_within_s=lambda settings: settings.notify.batch_within_s,
)

#: Every stage, in pipeline order.
SPECS: tuple[StageSpec, ...] = (ANALYSIS, RISK, EXECUTION, POSITIONS)
STAGES: tuple[str, ...] = tuple(spec.name for spec in SPECS)
# The compliance monitor watches the whole book (one worker reads every partition) and trips the
# protections (agents/compliance.py). Beside the trading path, not in it: `p95 worker --stage
# compliance` runs it; the demo and Kafka-mode replays (which start `STAGES`) do not.
COMPLIANCE = StageSpec("compliance", (topics.POSITION_TICKS, topics.ORDERS), timer=lambda settings: 1.0)

#: Stages outside the pipeline, run only when asked (`p95 worker --stage notifications`), or by
#: `p95 worker` / `p95 demo` when configured (see `default_stages`).
OPTIONAL_SPECS: tuple[StageSpec, ...] = (NOTIFICATIONS, COMPLIANCE)
BY_NAME: dict[str, StageSpec] = {spec.name: spec for spec in (*SPECS, *OPTIONAL_SPECS)}


def default_stages(settings: Settings) -> tuple[str, ...]:
    """What `p95 worker` (no --stage) and `p95 demo` run: the pipeline, and the notification hub when
    `P95_NOTIFY__URLS` is set."""
    return STAGES + ((NOTIFICATIONS.name,) if settings.notify.urls else ())


def spec(name: str) -> StageSpec:
    """The stage called `name`; ValueError naming the known stages otherwise."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r}; expected one of {', '.join(BY_NAME)}") from None
