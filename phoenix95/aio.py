"""asyncio helpers shared by the stages and their adapters."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any


async def all_of(*awaitables: Awaitable[Any]) -> list[Any]:
    """The awaitables' results, in order, run at once. When one raises, the others are cancelled
    and awaited before its exception propagates as it is (not as an ExceptionGroup): nothing is left
    running, e.g. on a pooled connection its caller is about to close."""
    tasks = [asyncio.ensure_future(awaitable) for awaitable in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
