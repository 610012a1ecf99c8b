"""Retries as explicit control flow: transient failures wait with capped backoff, forever, while the
partition waits; permanent failures are raised to the caller (which dead-letters the input)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
logger = logging.getLogger(__name__)


class PermanentError(Exception):
    """A write that will never succeed as it is (bad data, constraint violation)."""


async def retry_transient(
    action: Callable[[], Awaitable[T]],
    *,
    what: str,
    is_transient: Callable[[BaseException], bool],
    first_delay: float = 0.1,
    max_delay: float = 5.0,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> T:
    """Run `action` until it succeeds or fails permanently. Cancellation stops the retries."""
    attempt = 0
    delay = first_delay
    while True:
        try:
            return await action()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if not is_transient(error):
                raise
            attempt += 1
            if on_retry is not None:
                on_retry(attempt, error)
            log = logger.warning if attempt in (1, 5) or attempt % 20 == 0 else logger.debug
            log("%s failed (attempt %d, retrying in %.1fs): %s", what, attempt, delay, error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
