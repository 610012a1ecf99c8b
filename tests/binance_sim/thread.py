"""The simulator in a thread of its own (its own event loop), for tests whose workers are separate
processes and whose test body is synchronous (the fault harness)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from tests.binance_sim.server import BinanceSimulator

T = TypeVar("T")


class SimulatorThread:
    def __init__(self, **options: Any):
        self.loop = asyncio.new_event_loop()
        self.sim = BinanceSimulator(**options)
        self._thread = threading.Thread(target=self.loop.run_forever, name="binance-sim", daemon=True)

    def start(self) -> BinanceSimulator:
        self._thread.start()
        self.run(self.sim.start())
        return self.sim

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        self.run(self.sim.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def __enter__(self) -> BinanceSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
