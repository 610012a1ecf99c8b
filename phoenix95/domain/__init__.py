"""Pure trading logic: values, scoring, risk, margin and liquidation, execution model, positions.

Nothing in this package performs I/O or imports from the rest of Phoenix95, so the same code runs
inside the Faust agents, in backtests and in the CLI.
"""
