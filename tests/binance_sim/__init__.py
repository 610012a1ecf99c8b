"""A Binance USDⓈ-M futures simulator for the tests (no network to Binance here): see server.py."""

from tests.binance_sim.server import BinanceSimulator, Fault

__all__ = ["BinanceSimulator", "Fault"]
