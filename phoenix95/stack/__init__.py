"""The embedded stack: broker, PostgreSQL, Redis and time-series store as local processes."""
