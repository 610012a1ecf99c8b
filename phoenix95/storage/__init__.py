"""Storage adapters: PostgreSQL (system of record), Redis (hot state), time series (history)."""
