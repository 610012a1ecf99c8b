"""`aio.all_of`: reads run at once; when one fails, the others are cancelled and awaited before its
own exception propagates (nothing is left running on a connection its caller is about to close)."""

from __future__ import annotations

import asyncio

import pytest

from phoenix95.aio import all_of


def test_the_results_come_in_order_and_the_awaitables_run_at_once() -> None:
    async def after(seconds: float, value: str) -> str:
        await asyncio.sleep(seconds)
        return value

    async def scenario() -> tuple[list[str], float]:
        loop = asyncio.get_running_loop()
        began = loop.time()
        results = await all_of(after(0.2, "a"), after(0.1, "b"), after(0.2, "c"))
        return results, loop.time() - began

    results, took = asyncio.run(scenario())
    assert results == ["a", "b", "c"]
    assert took < 0.35  # at once: not 0.5 s one after another


def test_a_failure_cancels_and_awaits_the_others_and_propagates_as_it_is() -> None:
    finished: list[str] = []

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            finished.append("slow cleaned up")

    async def failing() -> None:
        await asyncio.sleep(0.01)
        raise LookupError("relation does not exist")

    async def scenario() -> None:
        with pytest.raises(LookupError, match="relation does not exist"):
            await all_of(slow(), failing())
        assert finished == ["slow cleaned up"]  # before all_of returned
        assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []

    asyncio.run(scenario())
