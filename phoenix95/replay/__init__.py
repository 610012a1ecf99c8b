"""Replay for backtesting: the recorded stream through the same stage code."""
